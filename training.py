"""The training loop around the scripts' train-step calls: the run's clock kept on the device (Progress), logging
to the console, TensorBoard and metrics.jsonl (Logger), the fixed-noise sample grids, Ctrl-C and SIGTERM
(StopRequest), and the loop itself (Loop: when to log, sample, evaluate and save; the --minutes budget; what is
saved when something goes wrong). The learning-rate schedule follows the same clock (LinearDecay).
"""
import contextlib
import glob
import json
import math
import os
import signal
import sys
import time

import tensorflow as tf

import common
import data
import devices
import files


class LinearDecay:
    """--lr_decay linear: lr * max(0, 1 - step / steps), a Keras 3 callable learning rate read at every update.

    `step` is the run's clock, Progress.step (generator steps), bound when Progress is created (through
    decay_learning_rates); not optimizer.iterations, which n_critic makes 5x the generator's. The WGAN-GP authors
    decay both Adams by the generator iteration the same way (gan_cifar_resnet.py). The step is checkpointed, so a
    resumed run continues the decay bit for bit.
    """

    def __init__(self, lr, steps):
        self.lr, self.steps, self.step = lr, steps, None

    def __call__(self):
        if self.step is None:
            raise RuntimeError("LinearDecay has no step counter; call training.decay_learning_rates first")
        return self.lr * tf.maximum(0.0, 1.0 - tf.cast(self.step, tf.float32) / float(self.steps))


def learning_rate(args):
    """What the scripts pass their optimizers: --lr, or with --lr_decay linear a LinearDecay from it. (A callable
    given later through optimizer.learning_rate = ... would drop the learning rate variable from a list the
    checkpoint tracks, which TensorFlow refuses to save.)"""
    return LinearDecay(args.lr, args.steps) if args.lr_decay == "linear" else args.lr


def decay_learning_rates(step, *optimizers):
    """Bind the optimizers' LinearDecay learning rates (if any) to the run's step counter, Progress.step."""
    for optimizer in optimizers:
        rate = getattr(optimizer, "inner_optimizer", optimizer)._learning_rate  # fp16: the LossScaleOptimizer's
        if isinstance(rate, LinearDecay):
            rate.step = step


# ----------------------------------------------------------------------------------------- progress on device
class Progress:
    """The run's clock and data position, advanced inside the compiled train step so that the loop never reads
    the device between steps, and a record, made in the graph, of the first step with a non-finite value.

    Create it inside strategy.scope(). A step counts as diverged when one of its metrics is NaN or Inf and every
    update of the step was applied: fp16's loss scaler skips an update whose scaled gradients overflowed (and
    lowers the scale), which is its normal working, not a divergence. It is not normal when it never ends: a loss
    scale below 1 (the gradients overflow float16 even scaled down) or FP16_SKIPPED_STEPS generator steps in a row
    in which every update was skipped stop the run as a divergence does.
    """

    FP16_SKIPPED_STEPS = 25  # from a scale of 2^15, 16 skips in a row already take it below 1
    MAX_LOGGED = 32  # logged values a step may have (the scripts log 4 to 7)

    def __init__(self, **optimizers):
        def variable(value, dtype):
            return tf.Variable(value, dtype=dtype, trainable=False)
        self.step = variable(0, tf.int64)  # generator steps: the run's clock (optimizer.iterations is not)
        self.batches = variable(0, tf.int64)  # real batches drawn: the data position
        self.train_seconds = variable(0.0, tf.float64)  # training time so far, written at each save
        self.state = {"step": self.step, "batches": self.batches, "train_seconds": self.train_seconds}
        self.optimizers = optimizers  # name -> optimizer, e.g. generator=g_opt, critic=c_opt
        decay_learning_rates(self.step, *optimizers.values())  # --lr_decay linear follows this clock
        self._updates = variable(0, tf.int64)  # updates the optimizers have applied, at the last step's end
        self._bad_step = variable(-1, tf.int64)  # the first diverged step, or -1
        self._bad_index = variable(0, tf.int32)
        self._bad_value = variable(0.0, tf.float32)
        self._skipped = variable(0, tf.int64)  # generator steps in a row in which every update was skipped
        self._whole = variable(True, tf.bool)  # the last step applied every one of its updates
        self._stuck_step = variable(-1, tf.int64)  # the first step at which fp16's skipping became endless, or -1
        self._stuck_scale = variable(0.0, tf.float32)  # the lowest loss scale at that step
        self._stuck_skipped = variable(0, tf.int64)  # and the steps in a row skipped by then
        self._last = variable(tf.zeros([self.MAX_LOGGED]), tf.float32)  # the last step's logged values
        self._names = []

    def _applied_updates(self):
        return tf.add_n([tf.cast(o.iterations, tf.int64) for o in self.optimizers.values()])

    def advance(self, metrics, critic_updates):
        """End of a train step, in the graph: count the step and its real batches, record a divergence, keep the
        step's logged values (with fp16's loss scales added) for logged()."""
        with tf.name_scope("progress"):  # benchmarks/profile_step.py --by_part tells its ops apart by this scope
            self._advance(metrics, critic_updates)

    def _advance(self, metrics, critic_updates):
        metrics = {**metrics, **{f"loss_scale/{name}": devices.loss_scale(o) for name, o in self.optimizers.items()
                                 if hasattr(o, "dynamic_scale")}}
        if len(metrics) > self.MAX_LOGGED:
            raise ValueError(f"a step logs {len(metrics)} values; Progress keeps at most {self.MAX_LOGGED}")
        self._names = list(metrics)
        values = tf.stack([tf.cast(v, tf.float32) for v in metrics.values()])
        self._last.assign(tf.pad(values, [[0, self.MAX_LOGGED - len(metrics)]]))
        finite = tf.math.is_finite(values)
        updates = self._applied_updates()
        all_applied = tf.equal(updates - self._updates, tf.cast(critic_updates, tf.int64) + 1)
        self._skipped.assign(tf.where(tf.equal(updates, self._updates), self._skipped + 1, 0))
        self._whole.assign(all_applied)
        self._updates.assign(updates)
        scales = [v for k, v in metrics.items() if k.startswith("loss_scale/")]  # fp16's, added above
        if scales:  # fp16
            lowest = tf.reduce_min(tf.stack(scales))
            stuck = tf.logical_and(tf.logical_or(lowest < 1.0, self._skipped >= self.FP16_SKIPPED_STEPS),
                                   self._stuck_step < 0)
            self._stuck_step.assign(tf.where(stuck, self.step + 1, self._stuck_step))
            self._stuck_scale.assign(tf.where(stuck, lowest, self._stuck_scale))
            self._stuck_skipped.assign(tf.where(stuck, self._skipped, self._stuck_skipped))
        self.step.assign_add(1)
        self.batches.assign_add(tf.cast(critic_updates, tf.int64))
        first = tf.logical_and(tf.logical_and(all_applied, tf.logical_not(tf.reduce_all(finite))),
                               self._bad_step < 0)
        index = tf.argmin(tf.cast(finite, tf.int32), output_type=tf.int32)
        self._bad_step.assign(tf.where(first, self.step, self._bad_step))
        self._bad_index.assign(tf.where(first, index, self._bad_index))
        # tf.gather, not values[index]: XLA needs a slice's index when it compiles, so a computed index would make
        # it compile the step anew at every call (--xla; tests/test_steps_per_call.py).
        self._bad_value.assign(tf.where(first, tf.gather(values, index), self._bad_value))

    def logged(self):
        """The logged values of the last step, {name: float32 scalar}: what a train step of several steps returns."""
        last = self._last.read_value()
        return {name: last[i] for i, name in enumerate(self._names)}

    def sync(self):
        """After a restore: the optimizers' update counts are the new reference."""
        self._updates.assign(self._applied_updates())

    def last_step_whole(self):
        """False if fp16's loss scaling skipped an update of the last step (reads the device)."""
        return bool(self._whole.numpy())

    def check(self):
        """Raise NonFiniteError if a step diverged or fp16 skips every update for good (reads the device: call it
        where the loop syncs anyway). The values are the same on every replica and worker (reduced metrics,
        mirrored variables), so every worker stops at the same step."""
        step = int(self._bad_step.numpy())
        if step >= 0:
            raise common.NonFiniteError(f"At step {step} {self._names[int(self._bad_index.numpy())]} became "
                                 f"{float(self._bad_value.numpy())}, so training stopped.")
        step = int(self._stuck_step.numpy())
        if step >= 0:
            skipped, scale = int(self._stuck_skipped.numpy()), float(self._stuck_scale.numpy())
            what = (f"skipped every update of {skipped} steps in a row" if skipped >= self.FP16_SKIPPED_STEPS else
                    f"lowered its loss scale to {scale:g} (the gradients overflow float16 even scaled down)")
            raise common.NonFiniteError(f"At step {step} fp16 loss scaling had {what}, so training stopped; start a "
                                        "new run with --precision bf16 or fp32, or a lower --lr.")


# ------------------------------------------------------------------------------------------------- logging
class Logger:
    """Progress bar with the current losses, TensorBoard scalars and images, and metrics.jsonl.

    A resumed run replays the steps after its checkpoint, so their old records (metrics.jsonl lines, TensorBoard
    events) are dropped first: every tag keeps one line.
    """

    def __init__(self, run_dir, total_steps, start_step, resumed=False):
        from tqdm import tqdm
        if resumed:  # a new run's folder holds nothing of its own yet: nothing there is touched
            _drop_history_after(run_dir, start_step)
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs"))
        self.jsonl = open(os.path.join(run_dir, "metrics.jsonl"), "a")
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                        disable=None)  # None: a bar only on a terminal

    def log(self, step, values):
        self.scalars(step, values)
        shown = {k: f"{v:.4g}" for k, v in values.items() if k not in ("images_per_sec", "train_seconds")}
        if self.bar.disable:  # no terminal (a log file, a batch job): one line per logging step instead of a bar
            print(f"step {step}/{self.bar.total} " + " ".join(f"{k} {v}" for k, v in shown.items()), flush=True)
        else:
            self.bar.set_postfix(shown, refresh=False)

    def scalars(self, step, values):
        with self.writer.as_default(step=step):
            for k, v in values.items():
                tf.summary.scalar(k, v)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()

    def write(self, line):
        self.bar.write(line)

    def image(self, step, grid):
        with self.writer.as_default(step=step):
            tf.summary.image("samples", grid[None])

    def close(self):
        self.bar.close()
        self.writer.flush()
        self.jsonl.close()


def _drop_history_after(run_dir, step):
    """Remove metrics.jsonl lines and TensorBoard events of steps after `step` (and a line torn by a kill)."""
    from tensorflow.core.util import event_pb2
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        kept = []
        with open(path) as f:
            for line in f:
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    pass  # a line torn by kill -9
        files.write_text(path, "".join(kept))
    for events in glob.glob(os.path.join(run_dir, "logs", "events.out.tfevents.*")):
        records, dropped = [], False
        try:
            for record in tf.data.TFRecordDataset(events):
                event = event_pb2.Event.FromString(record.numpy())
                if event.step > step:
                    dropped = True
                else:
                    records.append(record.numpy())
        except tf.errors.DataLossError:  # a record torn by kill -9 ends the file
            dropped = True
        if dropped:
            with files.atomic_path(events) as tmp, tf.io.TFRecordWriter(tmp) as writer:
                for record in records:
                    writer.write(record)


def save_samples(generator, noise, run_dir, step, logger=None):
    """Write samples/step_NNNNNN.png from the fixed noise, BatchNorm in inference mode (moving statistics)."""
    images = data.to_uint8(generator(noise, training=False))
    grid = data.image_grid(images, common.SAMPLE_GRID, common.SAMPLE_GRID)
    path = os.path.join(run_dir, "samples", f"step_{step:06d}.png")
    data.save_image(grid, path)
    if logger is not None:
        logger.image(step, grid)
    return path


# ---------------------------------------------------------------------------------------------- the loop
class StopRequest:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a request that the loop honours between calls, so that the
    checkpoint saved on the way out is of a whole step. A second Ctrl-C stops at once (still saving that
    checkpoint: a Python signal never lands inside the compiled step)."""

    def __init__(self, workers=1):
        self.requested, self.workers = False, workers
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        when = ("after the steps of this call (about a second)" if self.workers == 1 else
                "at the next log step, together with the other workers,")
        print(f"\nstopping {when} and saving a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr)

    def close(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


WRITTEN_OUT = 5  # critic updates a Wasserstein step writes out in its graph: the papers' n_critic


def repeat_update(update, iterator, count, fewest=None):
    """update(next(iterator)), `count` times inside a compiled step; returns the last call's values. `count` is a
    number, or a tensor never below the number `fewest`, which a tensor needs (WGAN's warm-up raises the count inside
    the step). The first min(fewest or count, WRITTEN_OUT) calls are written out in the graph and any more run in a
    loop: written out, a Wasserstein step on a negligible network costs 11-16% less than as a loop (docs/speed.md),
    for a few seconds more tracing when a run starts."""
    written = min(count if fewest is None else fewest, WRITTEN_OUT)
    for _ in range(written):
        logged = update(next(iterator))
    if tf.is_tensor(count) or count > written:
        for _ in tf.range(count - written):  # WGAN's warm-up (95 more), or an --n_critic above WRITTEN_OUT
            logged = update(next(iterator))
    return logged


CALL_SECONDS = 1.0  # a call of several steps takes about this long at most (after the first, which traces)


class Loop:
    """Everything around the scripts' train-step calls: the Python step counter, logging, sample grids,
    evaluation, checkpoints, the --minutes budget, Ctrl-C, and what happens on an error.

        with training.Loop(run, ckpt, progress, generator, evaluate) as loop:
            for steps in loop.calls():                     # generator steps of the next call, a tensor
                loop.end_call(train_step(iterator, steps))

    A call runs up to --steps_per_call generator steps inside one compiled function; calls are cut so that every
    log, sample, evaluation and checkpoint step ends one, so they happen at the same steps whatever the count, and
    so that a call takes about CALL_SECONDS (from the last call's time per step): Ctrl-C, the --minutes budget and
    the several workers' agreement to stop act between calls, so within about that time even on a slow CPU or in
    WGAN's warm-up. Where a call boundary falls never changes the results.

    The loop reads the device only on log, sample, evaluation and checkpoint steps. On a non-finite value it
    stops with NonFiniteError and saves nothing. On any other error it saves the last completed step (when its
    state is finite) before the error is reported, unless the error came from inside the compiled step, which
    may have applied part of that step's updates.
    """

    def __init__(self, run, ckpt, progress, generator, evaluate=None):
        self.run, self.args, self.ckpt, self.progress = run, run.args, ckpt, progress
        self.stopping = False  # several workers: agreed by all of them (devices.agree_to_stop)
        self.generator, self.evaluate = generator, evaluate
        self.step = int(progress.step.numpy())  # the host's copy of the clock, so the loop never reads the device's
        self.noise = common.fixed_noise(self.args.seed, self.args.z_dim)
        self.clock = float(progress.train_seconds.numpy())  # training seconds, evaluation and saving excluded
        self.in_step = False
        self.metrics, self.logged = None, self.step
        self.first_step = self.step
        self.save_pending = False  # a periodic checkpoint put off past a step with a skipped fp16 update
        self.per_call = getattr(self.args, "steps_per_call", 1)
        self.step_seconds = None  # wall seconds per step of the last call, tracing excluded
        self._counts = {}  # steps per call -> its tensor, made once

    def __enter__(self):
        self.progress.sync()
        self.log = Logger(self.run.write_dir, self.args.steps, self.step, resumed=bool(self.args.resume))
        self.stop = StopRequest(self.run.workers)
        self.mark = (self.step, int(self.progress.batches.numpy()), self.clock)  # at the last log line
        self.started = time.perf_counter()
        return self

    def seconds(self):
        return self.clock + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def _wants_to_stop(self):
        """This process's own reasons to stop: Ctrl-C or SIGTERM, or (the chief's clock) the --minutes budget."""
        budget = self.args.minutes * 60 or float("inf")
        return self.stop.requested or (self.run.chief and self.seconds() >= budget)

    def calls(self):
        # One process decides alone, before every call. Several workers must stop after the same step (each step
        # is a collective of all of them: a worker that leaves early hangs or kills the others), so they decide
        # together, at the loop's sync points (devices.agree_to_stop).
        while self.step < self.args.steps and not self.stopping and not (self.run.workers == 1
                                                                         and self._wants_to_stop()):
            self.call = 1 if self.save_pending else min(self.per_call, self._to_next_sync(), self._affordable())
            self.in_step, self.call_started = True, time.perf_counter()
            if self.call not in self._counts:
                self._counts[self.call] = tf.constant(self.call, tf.int32)
            yield self._counts[self.call]

    def _affordable(self):
        """Steps that fit CALL_SECONDS at the last call's pace (one until a call has been timed). Several workers
        must make the same calls, and each times its own: for them calls are cut by the step alone (they stop
        together at log steps anyway)."""
        if self.run.workers > 1:
            return self.per_call
        return 1 if self.step_seconds is None else max(1, int(CALL_SECONDS / max(self.step_seconds, 1e-9)))

    def _to_next_sync(self):
        """Steps from here to the next log, sample, evaluation or checkpoint step, or the end."""
        args, i = self.args, self.step
        every = [args.log_every, args.sample_every, args.ckpt_every, args.eval_every if self.evaluate else 0]
        return min([args.steps] + [i + e - i % e for e in every if e > 0]) - i

    def end_call(self, metrics):
        if self.step > self.first_step:  # the first call traces the step: its time says nothing of the pace
            self.step_seconds = (time.perf_counter() - self.call_started) / self.call
        self.in_step = False
        self.step += self.call
        self.metrics = metrics
        self.log.bar.update(self.call)
        i, args = self.step, self.args

        def due(every):
            return every > 0 and i % every == 0
        log, sample, evaluate, save = (due(args.log_every) or i == args.steps, due(args.sample_every),
                                       self.evaluate is not None and due(args.eval_every),
                                       due(args.ckpt_every) or self.save_pending)
        if log or sample or evaluate or save:
            self._pause()  # reads the metrics: waits for the device to finish this step
            if self.run.workers > 1:
                self.stopping = devices.agree_to_stop(self.run.strategy, self._wants_to_stop())
            if log:
                self._log()
            if sample and self.run.chief:
                save_samples(self.generator, self.noise, self.run.dir, i, self.log)
            if evaluate:  # on every worker, so that all of them take part in saving the best checkpoint
                score = self.evaluate(self.generator, i, self.log)
                if not math.isfinite(score):
                    raise common.NonFiniteError(f"At step {i} the evaluation score became {score}, so training "
                                                "stopped.")
                self.ckpt.save_if_best(i, score)  # before the periodic save, which holds the best score
            if save:
                # Periodic checkpoints hold whole steps only: after an fp16 step that skipped an update the save
                # waits for the next whole one, so a run whose skipping never ends (Progress.check stops it) has
                # saved nothing after its last good step.
                self.save_pending = not self.progress.last_step_whole()
                if not self.save_pending:
                    self._save()
            self.started = time.perf_counter()

    def _stop_clock(self):
        if self.started is not None:
            self.clock, self.started = self.seconds(), None

    def _pause(self):
        values = {k: float(v) for k, v in self.metrics.items()}  # waits for the device
        self._stop_clock()
        self.progress.check()
        self.values = values

    def _log(self):
        step, batches, clock = self.mark
        seconds = max(self.clock - clock, 1e-9)
        now = int(self.progress.batches.numpy())  # real batches drawn: images_per_sec counts real images
        self.log.log(self.step, {**self.values, "steps_per_sec": (self.step - step) / seconds,
                                 "images_per_sec": (now - batches) * self.args.batch_size / seconds,
                                 "train_seconds": self.clock})
        self.mark, self.logged = (self.step, now, self.clock), self.step

    def _save(self):
        self.progress.train_seconds.assign(self.clock)
        self.ckpt.save(int(self.progress.step.numpy()))

    def __exit__(self, kind, error, tb):
        self.stop.close()
        try:
            if error is None:
                if self.metrics is not None and self.started is not None:
                    self._pause()
                    if self.logged != self.step:
                        self._log()
                self._save()
                if self.run.chief:
                    save_samples(self.generator, self.noise, self.run.dir, self.step, self.log)
            elif not isinstance(error, common.NonFiniteError):
                self._save_after(error)
        finally:
            with contextlib.suppress(Exception):  # never hide the error that ended the run
                self.log.close()
            self.run.close()
        return False

    def _save_after(self, error):
        """Save the last completed step before `error` is reported, if that state is whole and finite."""
        if self.in_step and isinstance(error, tf.errors.OpError):
            print(f"error inside step {self.step + 1}, which may have applied part of its updates; the newest "
                  f"checkpoint ({self.ckpt.manager.latest_checkpoint or 'none yet'}) is where --resume continues.",
                  file=sys.stderr)
            return
        try:
            self._stop_clock()
            self.progress.check()
            self._save()
            print(f"saved the checkpoint of step {int(self.progress.step.numpy())} before stopping on the error below.",
                  file=sys.stderr)
        except Exception as e:  # noqa: BLE001 -- the original error is the one to report
            print(f"could not save a checkpoint before stopping ({e}).", file=sys.stderr)



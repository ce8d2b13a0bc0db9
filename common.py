"""Machinery shared by dcgan.py, wgan.py and wgan_gp.py that has no algorithm in it.

Run directories and config.json, the flags every script spells the same way, seeding and determinism, the
tf.distribute strategy, checkpoints (save, restore, refuse a mismatch), logging to the console, TensorBoard and
metrics.jsonl, the fixed-noise sample grid, and a clean stop on Ctrl-C. What differs between the variants (losses,
constraint, optimizer, normalisation, the train step) stays in the scripts.

A run directory looks like this:
    runs/<variant>-<dataset>-<YYYYmmdd-HHMMSS>/
        config.json            every flag, the variant, library versions, git commit
        ckpt/ckpt-<step>.*     the last --keep_ckpts checkpoints (tf.train.Checkpoint)
        samples/step_NNNNNN.png  an 8x8 grid from one fixed noise batch
        logs/                  TensorBoard event files
        metrics.jsonl          the logged scalars, one JSON object per line
"""
import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

import data
import ops

VARIANTS = ("dcgan", "wgan", "wgan_gp")
SAMPLE_GRID = 8  # the fixed-noise grid is SAMPLE_GRID x SAMPLE_GRID images

# Flags a resumed run may change; every other saved flag is part of the experiment and must match.
RESUMABLE_FLAGS = {"steps", "resume", "out_dir", "data_dir", "ckpt_every", "sample_every", "log_every",
                   "keep_ckpts", "xla", "eval_every", "eval_samples"}


class RunError(Exception):
    """A problem the user can fix; str(e) is one sentence saying what is wrong and what to do."""


def cli(main):
    """Run main(); user errors end with one sentence on stderr and exit status 2, not a traceback."""
    try:
        main()
    except (RunError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------------------------------- flags
def add_common_flags(parser, *, batch_size, steps, norm, norms=ops.NORMS):
    """Flags that mean the same thing in all three scripts, spelled the same way."""
    add = parser.add_argument
    add("--dataset", default="fashion_mnist", choices=data.DATASETS, help="training images")
    add("--data_dir", default=None,
        help="where the dataset's files are (required for 'folder'); default: the usual place for each dataset")
    add("--image_size", type=int, default=32, help="images are resized to image_size x image_size")
    add("--channels", type=int, default=1, choices=(1, 3), help="1 = grayscale, 3 = RGB (converted as needed)")
    add("--batch_size", type=int, default=batch_size, help="global batch size (split across devices)")
    add("--steps", type=int, default=steps,
        help="total generator steps of the run (a resumed run stops at the same total); the default is this "
             "project's choice for Fashion-MNIST, the papers train CIFAR/LSUN for 100k-200k steps")
    add("--z_dim", type=int, default=100,
        help="size of the noise vector z ~ N(0, I) (the DCGAN paper drew U[-1, 1]; Gaussian as in most later code)")
    add("--width", type=int, default=64,
        help="channels of the critic's first / generator's last hidden layer; doubles with every halving")
    add("--norm", default=norm, choices=norms, help="normalisation in the critic's hidden layers")
    add("--seed", type=int, default=0, help="seeds weights, noise, and data order")
    add("--deterministic", action="store_true",
        help="enable TF op determinism so that runs repeat bit for bit (slower on GPUs)")
    add("--xla", action="store_true", help="compile the train step with XLA (jit_compile=True)")
    add("--out_dir", default=None, help="run directory (default: runs/<variant>-<dataset>-<timestamp>)")
    add("--resume", default=None, metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint, with its saved flags")
    add("--ckpt_every", type=int, default=1000, help="save a checkpoint every N steps (and at the end, and on Ctrl-C)")
    add("--keep_ckpts", type=int, default=3, help="how many of the newest checkpoints to keep")
    add("--sample_every", type=int, default=500, help="write a sample grid from the fixed noise every N steps")
    add("--log_every", type=int, default=50, help="write losses to TensorBoard and metrics.jsonl every N steps")
    add("--eval_every", type=int, default=0,
        help="score the generator every N steps (0 = never) and keep the best checkpoint in ckpt_best/")
    add("--eval_samples", type=int, default=10000, help="generated images per evaluation")
    # Lower-is-better metrics of metrics.py only (the Inception Score is higher-is-better, so it cannot pick a best).
    add("--metric", default=None, choices=("classifier_fd", "classifier_kid", "fid", "kid"),
        help="what --eval_every computes (see metrics.py); default classifier_fd for fashion_mnist/mnist, else fid")


def parse_args(parser, variant, argv=None):
    """Parse flags; with --resume, saved flags become the defaults and an explicit conflicting flag is refused."""
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "ckpt_every", "sample_every", "log_every", "keep_ckpts", "width", "z_dim",
                 "eval_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.eval_every < 0:
        parser.error("--eval_every must be 0 (never) or positive")
    if args.resume is None:
        _check_shapes(args)
        return args
    saved = read_config(args.resume)
    if saved.get("variant") != variant:
        raise RunError(f"{args.resume} is a {saved.get('variant')} run; resume it with {saved.get('variant')}.py, "
                       f"not {variant}.py.")
    known = {a.dest for a in parser._actions}
    parser.set_defaults(**{k: v for k, v in saved.items() if k in known and k not in ("resume", "out_dir")})
    args = parser.parse_args(argv)
    for key in sorted(known - RESUMABLE_FLAGS - {"help"}):
        if key in saved and getattr(args, key) != saved[key]:
            raise RunError(f"--{key} {getattr(args, key)} conflicts with the saved run's {saved[key]}; "
                           f"drop the flag to resume {args.resume}, or start a new run.")
    return args


def _check_shapes(args):
    try:
        ops.base_size(args.image_size)
    except ValueError as e:
        raise RunError(str(e)) from None
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if args.batch_size % replicas:
        raise RunError(f"--batch_size {args.batch_size} does not split evenly over {replicas} devices.")


def read_config(run_dir):
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir} is not a directory.")
    if not os.path.isfile(path):
        raise RunError(f"{run_dir} is not a run directory (it has no config.json).")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(f"{path} cannot be read as JSON ({e}).") from None
    if not isinstance(config, dict) or config.get("variant") not in VARIANTS:
        raise RunError(f"{path} is not the config of a dcgan/wgan/wgan_gp run.")
    missing = [k for k in ("image_size", "channels", "z_dim", "width", "seed", "dataset") if k not in config]
    if missing:
        raise RunError(f"{path} lacks {', '.join(missing)}; it was not written by these scripts or was edited.")
    return config


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written config


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


# ------------------------------------------------------------------------------------------------ run set-up
def start_run(args, variant):
    """Seed, set determinism, and choose the run directory and its config; writes nothing (see save_config)."""
    keras.utils.set_random_seed(args.seed)  # Python, NumPy and TF global seeds (weight initialisation)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    if args.resume:
        config = read_config(args.resume)
        config.update({k: getattr(args, k) for k in RESUMABLE_FLAGS - {"resume", "out_dir"}})
        config.setdefault("resumed", []).append(_now())
        return args.resume, config
    run_dir = args.out_dir or os.path.join("runs", f"{variant}-{args.dataset}-{_now()}")
    if os.path.exists(os.path.join(run_dir, "config.json")):
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another "
                       "--out_dir.")
    config = {k: v for k, v in vars(args).items() if k not in ("resume", "out_dir")}
    config.update(variant=variant, created=_now(), git_commit=_git_commit(), versions={
        "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "numpy": np.__version__})
    return run_dir, config


def save_config(run_dir, config):
    """Create the run directory and write config.json: called once the data has loaded, so that bad input leaves
    no half-made run behind."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        _write_json(os.path.join(run_dir, "config.json"), config)
    except OSError as e:
        raise RunError(f"cannot write the run directory {run_dir} ({e.strerror}).") from None


def _now():
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def strategy():
    """The tf.distribute strategy: the default (one device) strategy for now; see README, 'Many devices'."""
    return tf.distribute.get_strategy()


def fixed_noise(seed, z_dim, n=SAMPLE_GRID * SAMPLE_GRID):
    """The noise batch behind every sample grid of a run: a pure function of the seed, so resume keeps it, and the
    same z as generate_images(seed), so `sample.py RUN --seed <the run's seed>` redraws the run's own grid."""
    return noise(n, z_dim, seed)


def noise(n, z_dim, seed):
    return tf.random.stateless_normal([n, z_dim], seed=[seed, 104729])


# --------------------------------------------------------------------------------------------- checkpoints
class Checkpoints:
    """tf.train.Checkpoint + CheckpointManager over everything a resumed run needs to continue as if never stopped."""

    def __init__(self, run_dir, keep, **objects):
        # The best score so far travels with the run, so that a resumed run keeps comparing against it.
        self.best_score = tf.Variable(float("inf"), dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(best_score=self.best_score, **objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(run_dir, "ckpt"), max_to_keep=keep,
                                                  checkpoint_name="ckpt")
        self.best = tf.train.CheckpointManager(self.checkpoint, os.path.join(run_dir, "ckpt_best"), max_to_keep=1,
                                               checkpoint_name="ckpt")

    def save_if_best(self, step, score):
        """Keep this step in ckpt_best/ if its score (lower is better) beats every earlier one; True if it did."""
        if not score < float(self.best_score):  # also False for NaN
            return False
        self.best_score.assign(score)
        self.best.save(checkpoint_number=step)
        return True

    def save(self, step):
        """Save as ckpt-<step>, unless that step is already saved (a final save right after a periodic one)."""
        latest = self.manager.latest_checkpoint
        if latest is None or not latest.endswith(f"ckpt-{step}"):
            self.manager.save(checkpoint_number=step)

    def restore_latest(self):
        path = self.manager.latest_checkpoint
        if path is None:
            raise RunError(f"{os.path.dirname(self.manager.directory)} has no checkpoint to resume from yet.")
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:  # IndexError: truncated data
            raise RunError(f"{path} does not fit this script's networks and optimizers ({_first_line(e)}).") from None
        return path


def _first_line(e):
    """The gist of a TF error: its first line, without the {{function_node ...}} prefix, at most 200 characters."""
    text = str(e).strip()
    if text.startswith("{{"):
        text = text.split("}}", 1)[-1].strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def checkpoint_path(run_dir, step=None, best=False):
    """The newest checkpoint of a run (or the one at `step`, or the best one); RunError if there is none."""
    ckpt_dir = os.path.join(run_dir, "ckpt_best" if best else "ckpt")
    if step is None:
        path = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
        if path is None:
            what = "best checkpoint (train with --eval_every to keep one)" if best else "checkpoint yet"
            raise RunError(f"{run_dir} has no {what}.")
        return path
    path = os.path.join(ckpt_dir, f"ckpt-{step}")
    if not os.path.exists(path + ".index"):
        kept = sorted(int(f[5:-6]) for f in os.listdir(ckpt_dir) if f.startswith("ckpt-") and f.endswith(".index")) \
            if os.path.isdir(ckpt_dir) else []
        raise RunError(f"{run_dir} has no checkpoint at step {step} (kept steps: "
                       f"{', '.join(map(str, kept)) or 'none'}).")
    return path


def load_generator(run_dir, step=None, best=False):
    """Rebuild a run's generator from config.json and restore its weights; returns (generator, config, path)."""
    config = read_config(run_dir)
    path = checkpoint_path(run_dir, step, best)
    generator = ops.make_generator(config["image_size"], config["channels"], config["z_dim"], config["width"])
    try:
        tf.train.Checkpoint(generator=generator).read(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:  # IndexError: truncated data
        raise RunError(f"{path} cannot be restored into the generator described by config.json "
                       f"({_first_line(e)}).") from None
    return generator, config, path


# ------------------------------------------------------------------------------------------------- logging
class Logger:
    """Progress bar with the current losses, TensorBoard scalars and images, and metrics.jsonl."""

    def __init__(self, run_dir, total_steps, start_step, every):
        from tqdm import tqdm
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs"))
        self.jsonl = open(os.path.join(run_dir, "metrics.jsonl"), "a")
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                        disable=None)  # None: a bar only on a terminal
        self.every = every
        self.last_step, self.last_time = start_step, time.perf_counter()

    def step(self, step, metrics, images_per_step):
        """Call once per generator step; writes every `every` steps (fetching values only then)."""
        self.bar.update(1)
        if step % self.every and step != self.bar.total:
            return
        now = time.perf_counter()
        values = {k: float(v) for k, v in metrics.items()}
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        values.update(steps_per_sec=rate, images_per_sec=rate * images_per_step)
        self.last_step, self.last_time = step, now
        self.scalars(step, values)
        shown = {k: f"{v:.4g}" for k, v in values.items() if k != "images_per_sec"}
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


class Evaluator:
    """--eval_every: score --eval_samples generated images with metrics.py and log the scores."""

    def __init__(self, args):
        import metrics  # only runs that evaluate need it (and its cached classifier or Inception network)
        self.metric = args.metric or metrics.default_metric(args.dataset)
        self.scorer = metrics.make_scorer(self.metric, args.dataset, args.data_dir, args.image_size, args.channels)
        self.n, self.z_dim, self.seed = args.eval_samples, args.z_dim, args.seed + 1

    def __call__(self, generator, step, logger):
        """Returns the score to minimise (the scorer's first value)."""
        scores = self.scorer(generate_images(generator, self.n, self.z_dim, self.seed))
        logger.scalars(step, {f"eval/{k}": v for k, v in scores.items()})
        logger.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        return next(iter(scores.values()))


def save_samples(generator, noise, run_dir, step, logger=None):
    """Write samples/step_NNNNNN.png from the fixed noise, BatchNorm in inference mode (moving statistics)."""
    images = data.to_uint8(generator(noise, training=False))
    grid = data.image_grid(images, SAMPLE_GRID, SAMPLE_GRID)
    path = os.path.join(run_dir, "samples", f"step_{step:06d}.png")
    data.save_image(grid, path)
    if logger is not None:
        logger.image(step, grid)
    return path


class StopRequest:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a request that the loop honours between steps.

    A generator step is several tf.function calls (n_critic critic updates, then one generator update); stopping
    between two of them would save a half-done step and break exact resume. A second Ctrl-C stops at once.
    """

    def __init__(self):
        self.requested = False
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr)

    def close(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


_INFERENCE = weakref.WeakKeyDictionary()  # generator -> its traced inference function, reused across calls


def generate(generator, z, batch_size=500):
    """uint8 images [N, H, W, C] for z [N, z_dim], in batches, BatchNorm in inference mode (moving statistics)."""
    if generator not in _INFERENCE:  # trace once per generator, not at every --eval_every evaluation
        _INFERENCE[generator] = tf.function(lambda z: generator(z, training=False))
    run = _INFERENCE[generator]
    if len(z) == 0:
        return np.zeros((0, *generator.output_shape[1:]), np.uint8)
    return np.concatenate([data.to_uint8(run(z[i:i + batch_size])) for i in range(0, len(z), batch_size)])


def generate_images(generator, n, z_dim, seed=0, batch_size=500):
    """n images as uint8 (n, H, W, C) from z ~ N(0, I) drawn statelessly from `seed`."""
    return generate(generator, noise(n, z_dim, seed), batch_size)

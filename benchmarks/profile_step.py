"""Where one generator step's time goes on a CPU: TF's profiler over a script's own train step, by op type.

    python benchmarks/profile_step.py dcgan --serial                  # --batch_size 64 unless given
    python benchmarks/profile_step.py wgan_gp --precision bf16        # other flags go to the script's parser
    python benchmarks/profile_step.py dcgan --serial --layers         # and each layer's kernels timed alone
    python benchmarks/profile_step.py dcgan --batchnorm               # and each BatchNorm, fused against composed

The train step, optimizers and data are built as benchmarks/bench_train.py builds them (the script's own). After
untimed warm-up steps, --steps generator steps are traced with tf.profiler and every op's own time (nested events
subtracted) is summed by op type: a markdown table of milliseconds per generator step and share of all op time.

--serial runs one op at a time (inter-op parallelism 1), so that an op's time is its own and not shared with an
op running beside it; the step is then a little slower than with TF's default. The table then ends with the bound
the convolution kernels set: the step's counted FLOPs (bench_train.step_flops) over the time of its convolution
and matmul kernels alone, the GFLOP/s the step would reach if every other op took no time, next to the forward
ceiling bench_train.py measures. --layers adds each convolution layer's forward, input-gradient and
weight-gradient kernels timed alone (GFLOP/s): which shapes and which directions are slow. On a GPU the host's op
events are launches, not kernel times; use TensorBoard's profiler there.
"""
import argparse
import collections
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import bench_train  # noqa: E402
import ops  # noqa: E402

# Op types of the convolution and matmul kernels (oneDNN's and Eigen's), matched by these substrings.
KERNELS = ("Conv2D", "MatMul")


# Parts of a step, told apart by an op's node name (its name scopes) or, for the random generator and the data,
# by its type; first match wins. Keras names the networks' ops after the models and the optimizers' after their
# class; Progress and devices.reduce_metrics open the scopes "progress" and "reduce_metrics".
PARTS = [("loss-scale wrapper", ("loss_scale_optimizer",)), ("networks, backward", ("gradient_tape/",)),
         ("networks, forward", ("/generator", "/critic", "generator_", "critic_")),
         ("optimizers", ("/adam/", "/rmsprop/", "/adam_", "/rmsprop_")), ("Progress' bookkeeping", ("progress/",)),
         ("metric reduction", ("reduce_metrics/",)),
         ("random generator", ("StatefulUniform", "StatefulStandardNormal", "RngReadAndSkip", "StatelessRandom",
                               "RngSkip")),
         ("data", ("IteratorGetNext",))]
OTHER_PART = "the rest: losses, the strategy wrapper, the loop"


def part_of(name):
    """The part of the step an event "node/name:OpType" belongs to (PARTS), else OTHER_PART."""
    lowered = name.lower()
    return next((part for part, keys in PARTS if any(key.lower() in lowered for key in keys)), OTHER_PART)


def op_self_times(xspace, key=None):
    """{op type: seconds} over the TF executor threads of an XSpace, each event's own time (children subtracted);
    with key=part_of, {part of the step: seconds}."""
    totals = collections.Counter()
    for plane in xspace.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            stack = []  # [end, op type or None, children's time, duration] of the enclosing events
            for event in sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps)):
                start, end = event.offset_ps, event.offset_ps + event.duration_ps
                while stack and stack[-1][0] <= start:
                    close(stack.pop(), totals)
                if stack:
                    stack[-1][2] += event.duration_ps
                name = names.get(event.metadata_id, "")
                op_type = name.rsplit(":", 1)[1] if ":" in name and "::" not in name else None  # "node:OpType"
                stack.append([end, key(name) if key and op_type else op_type, 0, event.duration_ps])
            while stack:
                close(stack.pop(), totals)
    return totals


def close(entry, totals):
    _, op_type, children, duration = entry
    if op_type:  # events without an op type (the executor's own) are wrappers, not work
        totals[op_type] += (duration - children) / 1e12


def profile(step, steps, warmup, key=None):
    """{op type (or key(node name)): seconds per generator step} and the wall seconds per step while tracing;
    step() is one generator step (bench_train.one_step)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # ships with TF; its location is not a public API

    for _ in range(warmup):
        metrics = step()
    if warmup:
        float(next(iter(metrics.values())))
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            metrics = step()
        float(next(iter(metrics.values())))
        wall = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        xspace = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            xspace.ParseFromString(f.read())
    return {op: seconds / steps for op, seconds in op_self_times(xspace, key).items()}, wall


def layer_kernel_rates(model, batch, dtype, seconds):
    """[(layer, forward, input-gradient, weight-gradient GFLOP/s)] of each convolution layer's three kernels, timed
    alone on random tensors of the layer's shapes at `batch` in `dtype` (each kernel costs the layer's FLOPs)."""
    rows = []
    for layer in model.layers:
        transposed = isinstance(layer, keras.layers.Conv2DTranspose)
        if not (transposed or isinstance(layer, keras.layers.Conv2D)):
            continue
        # A transposed convolution's forward is a convolution's input gradient and the other way round; the
        # tensors on its input side play the part of a convolution's output side.
        small, large = (layer.input, layer.output) if transposed else (layer.output, layer.input)
        x = tf.cast(tf.random.normal([batch, *large.shape[1:]]), dtype)
        dy = tf.cast(tf.random.normal([batch, *small.shape[1:]]), dtype)
        kernel = tf.cast(tf.random.normal(layer.kernel.shape, stddev=0.02), dtype)
        strides, padding = [1, *layer.strides, 1], layer.padding.upper()
        conv = tf.function(lambda: tf.nn.conv2d(x, kernel, strides, padding))
        input_grad = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x.shape, filter=kernel, out_backprop=dy, strides=strides, padding=padding))
        weight_grad = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=kernel.shape, out_backprop=dy, strides=strides, padding=padding))
        forward, backward = (input_grad, conv) if transposed else (conv, input_grad)
        flops = bench_train.layer_flops(layer, batch)
        rows.append((layer, *(bench_train.best_rate(fn, flops, seconds) / 1e9 for fn in (forward, backward,
                                                                                            weight_grad))))
    return rows


def batchnorm_microseconds(layer, x, seconds):
    """µs per call of one BatchNorm layer trained alone on x: forward, and the gradients of its input and weights."""
    layer.build(x.shape)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, [x, *layer.trainable_weights])])
    return 1e6 / bench_train.best_rate(step, 1, seconds)


def batchnorm_lines(models, batch, seconds):
    """Each BatchNorm layer of the networks at its input shape, through ops.BatchNormalization (TensorFlow's fused
    kernel: one op each way) and through Keras' own, which composes it from about ten ops each way."""
    lines = ["", f"Each BatchNorm layer alone, forward and backward, µs per call (batch {batch}):", "",
             "| network | input | fused kernel (ops.BatchNormalization) | Keras' composed | fused / composed |",
             "| --- | --- | ---: | ---: | ---: |"]
    for model in models:
        for layer in (layer for layer in model.layers if isinstance(layer, ops.BatchNormalization)):
            x = tf.random.normal([batch, *layer.input.shape[1:]])
            ours = ops.batch_norm()
            keras_own = keras.layers.BatchNormalization.from_config(ours.get_config())  # the same settings
            fused, composed = (batchnorm_microseconds(norm, x, seconds) for norm in (ours, keras_own))
            shape = "x".join(map(str, layer.input.shape[1:]))
            lines.append(f"| {model.name} | {shape} | {fused:.0f} | {composed:.0f} | {fused / composed:.2f} |")
    return lines


def parse_args(parser, argv):
    known, flags = parser.parse_known_args(argv)
    if known.steps < 1 or known.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    if not any(f == "--batch_size" or f.startswith("--batch_size=") for f in flags):
        flags = ["--batch_size", "64", *flags]
    if known.serial:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return known, flags


def part_lines(step, known):
    """A table of the step's op time by part (PARTS), from a second profile of the same step."""
    times, _ = profile(step, known.steps, 0, key=part_of)
    total = sum(times.values())
    return ["", "| part of the step | ms per step | % of op time |", "| --- | ---: | ---: |"] + [
        f"| {part} | {t * 1e3:.2f} | {100 * t / total:.1f} |" for part, t in sorted(times.items(), key=lambda i: -i[1])]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("variant", choices=list(bench_train.MODULES))
    parser.add_argument("--steps", type=int, default=5, help="traced generator steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed generator steps first (tracing)")
    parser.add_argument("--serial", action="store_true", help="one op at a time (inter-op parallelism 1)")
    parser.add_argument("--top", type=int, default=15, help="op types listed; the rest are summed in one row")
    parser.add_argument("--layers", action="store_true",
                        help="also time each convolution layer's forward, input- and weight-gradient kernels alone")
    parser.add_argument("--layer_seconds", type=float, default=0.6, help="timing budget of each of those kernels")
    parser.add_argument("--by_part", action="store_true",
                        help="also split the op time by part of the step: networks, optimizers, loss scaling, "
                             "Progress, the metric reduction, the random generator, the data, the rest")
    parser.add_argument("--batchnorm", action="store_true", help="also time each BatchNorm alone, fused and composed")
    known, flags = parse_args(parser, argv)

    header = bench_train.machine_header()
    args, generator, critic, iterator, train_step, progress = bench_train.build(known.variant,
                                                                                ["--strategy", "one", *flags])
    n_critic = bench_train.critic_schedule(known.variant, args)[0][1]
    step = bench_train.one_step(known.variant, train_step, iterator, progress, n_critic)
    times, wall = profile(step, known.steps, known.warmup)
    flops = bench_train.step_flops(known.variant, generator, critic, args.batch_size, n_critic,
                                   getattr(args, "gen_batch_multiple", 1))
    total = sum(times.values())
    kernels = sum(t for op, t in times.items() if any(k in op for k in KERNELS))

    ranked = sorted(times.items(), key=lambda item: -item[1])
    shown, rest = ranked[:known.top], ranked[known.top:]
    if rest:
        shown.append((f"{len(rest)} other op types", sum(t for _, t in rest)))
    lines = [f"## One {known.variant} generator step by op type ({' '.join(flags)}; n_critic {n_critic}; "
             f"{'one op at a time' if known.serial else 'default threading'})", "", *header, "",
             f"- {wall * 1e3:.1f} ms per generator step while tracing; op time {total * 1e3:.1f} ms "
             f"(over all executor threads), {100 * kernels / total:.1f}% of it in convolution and matmul kernels",
             "", "| op type | ms per step | % of op time |", "| --- | ---: | ---: |"]
    lines += [f"| {op} | {t * 1e3:.2f} | {100 * t / total:.1f} |" for op, t in shown]
    lines += part_lines(step, known) if known.by_part else []
    dtype = keras.config.dtype_policy().compute_dtype
    if known.serial:
        conv = bench_train.largest_conv(critic)
        ceiling = bench_train.conv_ceiling(conv, args.batch_size, dtype, seconds=1.5) * 1e9
        lines += ["", f"- counted FLOPs per step: {flops / 1e9:.1f} G. The whole step: {flops / wall / 1e9:.0f} "
                      f"GFLOP/s, {100 * flops / wall / ceiling:.0f}% of the forward ceiling ({ceiling / 1e9:.0f} "
                      f"GFLOP/s, {bench_train.conv_description(conv, args.batch_size)}, {dtype}). Its convolution "
                      f"and matmul kernels alone: {flops / kernels / 1e9:.0f} GFLOP/s, "
                      f"{100 * flops / kernels / ceiling:.0f}% of that ceiling: the most the step can reach with "
                      "these kernels if every other op took no time."]
    if known.layers:
        lines += ["", f"Each convolution layer's kernels alone, GFLOP/s ({dtype}, batch {args.batch_size}):", "",
                  "| network | layer | forward | input gradient | weight gradient |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for model in (generator, critic):
            for layer, *rates in layer_kernel_rates(model, args.batch_size, dtype, known.layer_seconds):
                shape = " -> ".join("x".join(map(str, t.shape[1:])) for t in (layer.input, layer.output))
                shape += f", {layer.kernel_size[0]}x{layer.kernel_size[1]}/{layer.strides[0]}"
                lines.append(f"| {model.name} | {shape} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")
    lines += batchnorm_lines((generator, critic), args.batch_size, known.layer_seconds) if known.batchnorm else []
    print("\n".join(lines))


if __name__ == "__main__":
    main()

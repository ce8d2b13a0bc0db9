"""Training throughput of the three variants, set against this machine's own ceiling, as a markdown table.

    python benchmarks/bench_train.py                          # all variants, fp32/bf16/fp16, XLA off and on
    python benchmarks/bench_train.py --variants dcgan --precisions fp32 bf16 --xla off --steps 100
    python benchmarks/bench_train.py --batch_size 256 --image_size 64   # other flags go to the scripts' own parsers
    python benchmarks/bench_train.py --strategy mirrored --xla off      # all GPUs (default: --strategy one)
    python benchmarks/bench_train.py --variants wgan_gp --precisions fp32 bf16 --xla off --steps 5 --warmup 2 \
        --arch resnet --image_size 32 --channels 3 --width 128 --z_dim 128 --norm none   # WGAN-GP's CIFAR-10 ResNet
    python benchmarks/bench_train.py --folder_images 20000 --image_size 64 --variants dcgan --precisions fp32 \
        --xla off --steps 5           # the folder pipeline: a generated folder of 20,000 RGB JPEGs, decoded once

Each row times a script's own train step (one tf.function call per generator step), optimizers and data pipeline,
built as the script builds them (checkpoints, sample grids and logging excluded): untimed warm-up steps first
(tracing), then --steps generator steps, blocking on the result only at the end. Either phase stops early, after
one step, past --row_seconds (TF's fp16 convolution gradients on a CPU can take most of a minute per step). For
each precision the same process first measures a ceiling in that precision's compute dtype: the critic's largest
convolution at the benchmark batch size (forward) and a large square matmul. WGAN gets a second row at its
warm-up schedule (100 critic updates per generator step), timed over as many critic updates as the regular row:
both should run the critic at the same rate. Each variant's rows also say how many real images/s its input
pipeline yields on its own: more than the training rows' real images/s means the device need not wait for data.
With --folder_images N the scripts train on a generated folder of N RGB JPEGs (--dataset folder, --channels 3),
made once and kept for later runs; the folder's decoded-image cache is built before the first row (the time of
that one decode, and of a later run's start from the cache, are printed as notes), so the pipeline column is the
steady state every epoch after the first runs at.

FLOPs of one generator step are counted from the networks (see step_flops): the multiply-adds of every Dense,
Conv2D and Conv2DTranspose layer, 2 FLOPs each, forward and backward; for the ResNet (--arch resnet) also its
1x1 shortcut convolutions (Conv2D layers), its mean pooling (an add per input element) and its residual sums (an
add per element). Not counted: biases, normalisation, activations, upsampling (copies), losses, the noise and the
optimizer updates (well under 1% of the DCGAN backbone's FLOPs).
"""
import argparse
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "experiments")]  # the plain reference steps: experiments/dcgan_gap.py
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import devices  # noqa: E402
import training  # noqa: E402
import common  # noqa: E402
import data  # noqa: E402
import files  # noqa: E402
import dcgan  # noqa: E402
import ops  # noqa: E402
import wgan  # noqa: E402
import wgan_gp  # noqa: E402

MODULES = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp}
PRECISIONS = ("fp32", "bf16", "fp16")
# /proc/cpuinfo flag names of the instructions that decide TF's CPU speed, in the order they are printed.
CPU_FEATURES = {"AVX-512": "avx512f", "AVX512_BF16": "avx512_bf16", "AMX": "amx_tile", "AVX2": "avx2", "FMA": "fma",
                "AVX512_FP16": "avx512_fp16"}
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
FP16_FLAGS = {"avx512_fp16", "amx_fp16"}


# ------------------------------------------------------------------------------------------------ the machine
def parse_cpuinfo(text):
    """(model name, set of flags) of the first processor in a /proc/cpuinfo text; ("unknown", set()) if absent."""
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_feature_line(flags):
    """'AVX-512 yes, AVX512_BF16 no, ...' for the instruction sets in CPU_FEATURES."""
    return ", ".join(f"{name} {'yes' if flag in flags else 'no'}" for name, flag in CPU_FEATURES.items())


def machine_header(cpuinfo_path="/proc/cpuinfo"):
    """Markdown lines naming the CPU and its flags, the GPUs, TF and the devices; notes on missing bf16/fp16."""
    try:
        with open(cpuinfo_path) as f:
            model, flags = parse_cpuinfo(f.read())
    except OSError:
        model, flags = "unknown (no /proc/cpuinfo)", set()
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"- CPU: {model}, {os.cpu_count()} logical cores; {cpu_feature_line(flags)}",
             f"- GPU: {', '.join(names) if names else 'none'}",
             f"- TensorFlow {tf.__version__}, Keras {keras.__version__}; devices: "
             f"{', '.join(d.name for d in tf.config.list_logical_devices())}",
             f"- load average (1, 5, 15 min) at the start: {load}"]
    if not gpus and not flags & BF16_FLAGS:
        lines.append("- this CPU has no bf16 instructions (AVX512_BF16, AMX-BF16): bf16 is emulated, expect it "
                     "slower than fp32")
    if not gpus and not flags & FP16_FLAGS:
        lines.append("- this CPU has no fp16 arithmetic instructions (AVX512_FP16, AMX-FP16): fp16 is computed "
                     "through conversions, not natively")
    return lines


# ---------------------------------------------------------------------------------------------- FLOP counter
def layer_flops(layer, batch):
    """Forward FLOPs (a multiply-add is 2) of a Dense, Conv2D or Conv2DTranspose layer at `batch`; 0 otherwise.

    Dense and Conv2D: every output element costs one multiply-add per kernel element feeding it (the kernel's
    receptive field times the input channels; 'same' padding's zeros counted, as is usual). Conv2DTranspose:
    every *input* element is scattered through the whole kernel into each output channel.
    """
    if isinstance(layer, keras.layers.Conv2DTranspose):  # before Conv2D: Keras 3 keeps them separate, but be safe
        kh, kw, c_out, c_in = layer.kernel.shape  # Keras stores a transposed kernel as (kh, kw, filters, inputs)
        return 2 * batch * math.prod(layer.input.shape[1:3]) * kh * kw * c_in * c_out
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, c_in, c_out = layer.kernel.shape
        return 2 * batch * math.prod(layer.output.shape[1:3]) * kh * kw * c_in * c_out
    if isinstance(layer, keras.layers.Dense):
        n_in, n_out = layer.kernel.shape
        return 2 * batch * math.prod(layer.output.shape[1:-1]) * n_in * n_out
    # The ResNet's parameter-free arithmetic: mean pooling sums every input element once (the division by 4 per
    # output element is counted too), the residual Add one add per output element per extra input.
    if isinstance(layer, (keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D)):
        return batch * (math.prod(layer.input.shape[1:]) + math.prod(layer.output.shape[1:]))
    if isinstance(layer, keras.layers.Add):
        return batch * (len(layer.input) - 1) * math.prod(layer.output.shape[1:])
    return 0


def _upstream(tensors):
    """The layers that `tensors` (one or a list) are computed from, directly or not."""
    seen, todo = set(), list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
    while todo:
        history = getattr(todo.pop(), "_keras_history", None)
        if history is None or id(history.operation) in seen:
            continue
        seen.add(id(history.operation))
        layer = history.operation
        todo += list(layer.input) if isinstance(layer.input, (list, tuple)) else [layer.input]
        yield layer


def network_flops(model, batch):
    """(forward FLOPs of the model at `batch`, those of its first counted layers, of its last).

    The first counted layers are those with no layer holding weights upstream: one in a chain, three in the ResNet
    critic (the first conv, and the shortcut's pooling and 1x1 conv); their backward needs no input gradient
    unless something differentiates w.r.t. the input.
    """
    counted = [(layer, layer_flops(layer, batch)) for layer in model.layers
               if not isinstance(layer, keras.layers.InputLayer)]
    counted = [(layer, f) for layer, f in counted if f]
    first = sum(f for layer, f in counted if not any(up.weights for up in _upstream(layer.input) if up is not layer))
    return sum(f for _, f in counted), first, counted[-1][1]


def step_flops(variant, generator, critic, batch, n_critic, gen_batch_multiple=1):
    """FLOPs of one generator step: n_critic critic updates on `batch` images and one generator update on
    gen_batch_multiple * batch (WGAN-GP's --gen_batch_multiple).

    A layer's backward pass is its input gradient plus its weight gradient, each as costly as its forward pass,
    so a network's backward is 2F - F1 (F its forward, F1 its first layer's) when nothing needs the gradient
    w.r.t. the network's input, and 2F when something does. G and D are the two networks' forward FLOPs.
    """
    g, g1, _ = network_flops(generator, batch)
    d, d1, d_last = network_flops(critic, batch)
    # Critic update: G(z) forward only (G is not updated; no gradient flows into the fakes), D forward and
    # backward on the real and on the fake batch.
    critic_update = g + 2 * (d + 2 * d - d1)
    if variant == "wgan_gp":
        # Penalty at x_hat (a third batch), 6d - d1 - 3 d_last in all:
        #   d                    D forward at x_hat
        # + d                    dD/dx_hat: input gradients through every layer, the first included
        # + 2d - d_last          the double backward: back through that input-gradient pass, each of whose ops
        #                        needs an input and a weight gradient again (but the last layer's op needs no
        #                        input gradient: its input is the constant dD/dD = 1)
        # + 2d - d1 - 2 d_last   back through the forward pass at x_hat, on which the input gradients depend via
        #                        LayerNorm's statistics and the activations' masks: weight and input gradients,
        #                        none w.r.t. x_hat and none for the last (linear) layer, whose value is unused
        critic_update += 6 * d - d1 - 3 * d_last
    # Generator update: G forward, D forward on the fakes, D's input gradients through every layer (no weight
    # gradients: D is not updated), G backward (2g - g1: z needs no gradient).
    generator_update = g + d + d + 2 * g - g1
    return n_critic * critic_update + gen_batch_multiple * generator_update  # FLOPs are linear in the batch


# -------------------------------------------------------------------------------------------------- ceiling
def best_rate(fn, flops, seconds, windows=3):
    """FLOP/s of fn() (which returns a tensor): the best of `windows` timing windows, after one untimed call."""
    fn().numpy()
    best = 0.0
    for _ in range(windows):
        calls, start = 0, time.perf_counter()
        while True:
            out = fn()
            calls += 1
            if time.perf_counter() - start >= seconds / windows:
                break
        out.numpy()  # blocks on a GPU, where calls return before they finish
        best = max(best, calls * flops / (time.perf_counter() - start))
    return best


def largest_conv(critic):
    """The critic's Conv2D with the most FLOPs."""
    return max((layer for layer in critic.layers if isinstance(layer, keras.layers.Conv2D)),
               key=lambda layer: layer_flops(layer, 1))


def conv_ceiling(conv, batch, dtype, seconds):
    """GFLOP/s of `conv`'s convolution (shape, strides, padding) on a random batch, forward, in dtype."""
    x = tf.cast(tf.random.normal([batch, *conv.input.shape[1:]]), dtype)
    kernel = tf.cast(tf.random.normal(conv.kernel.shape, stddev=0.02), dtype)
    run = tf.function(lambda: tf.nn.conv2d(x, kernel, conv.strides, conv.padding.upper()))
    return best_rate(run, layer_flops(conv, batch), seconds) / 1e9


def matmul_ceiling(n, dtype, seconds):
    a = tf.cast(tf.random.normal([n, n], stddev=n ** -0.5), dtype)
    b = tf.cast(tf.random.normal([n, n], stddev=n ** -0.5), dtype)
    run = tf.function(lambda: tf.matmul(a, b))
    return best_rate(run, 2 * n ** 3, seconds) / 1e9


def conv_description(conv, batch):
    h, w, c_in = conv.input.shape[1:]
    h_out, w_out, c_out = conv.output.shape[1:]
    kh, kw = conv.kernel_size
    return f"{h}x{w}x{c_in} -> {h_out}x{w_out}x{c_out}, {kh}x{kw}/{conv.strides[0]}, batch {batch}"


# ------------------------------------------------------------------------------------------- a folder dataset
def make_folder(path, n, seed=0):
    """A folder of n RGB JPEGs (112x96, CelebA's aspect ratio, smooth random colour fields plus grain) at path,
    made once: reused if complete, built under a temporary name and renamed into place otherwise."""
    import numpy as np
    from PIL import Image

    if os.path.isfile(os.path.join(path, "done")):
        return path
    rng = np.random.default_rng(seed)
    try:
        with files.atomic_path(path, folder=True) as tmp:
            for k in range(n):
                coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), np.uint8)).resize((96, 112), Image.BILINEAR)
                pixels = np.asarray(coarse, np.int16) + rng.integers(-12, 13, (112, 96, 1), np.int16)
                folder = os.path.join(tmp, f"{k // 1000:03d}")
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    os.path.join(folder, f"{k:06d}.jpg"), quality=90)
            open(os.path.join(tmp, "done"), "w").close()
    except OSError:  # another benchmark made it first
        if not os.path.isfile(os.path.join(path, "done")):
            raise
    return path


def folder_notes(flags):
    """Notes timing the folder's one decode into its cache and a later run's start from the cache."""
    args = dcgan.parse_args(flags)
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        data.make_dataset(args.dataset, args.data_dir, args.image_size, args.channels, args.batch_size)
        timings.append(time.perf_counter() - start)
        data._memo.clear()  # the second call reads the cache as a new run would
    return [f"folder {args.data_dir}: the first make_dataset took {timings[0]:.1f} s (it decodes the folder into "
            f"its cache, unless an earlier run left the cache), a second one {timings[1]:.1f} s (a later run's start: "
            "the listing checked, the cache read); the rows read the cache"]


# -------------------------------------------------------------------------------------------------- training
def build(variant, flags):
    """A script's args, networks, optimizers, data iterator and train step, as its main() builds them."""
    module = MODULES[variant]
    args = module.parse_args(flags)
    keras.backend.clear_session()
    strategy = devices.make_strategy(args)
    keras.utils.set_random_seed(args.seed)
    devices.set_precision(args.precision)  # the Keras global dtype policy, before the networks are built
    with strategy.scope():
        generator = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width, arch=args.arch,
                                       first_bn=args.first_bn)
        critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm, arch=args.arch)
        g_opt, c_opt = module.make_optimizers(args, generator, critic)
        rng = tf.random.Generator.from_seed(args.seed)
        progress = training.Progress(generator=g_opt, critic=c_opt)
    iterator = iter(devices.distribute_dataset(strategy, args, start_batch=0))
    train_step = module.make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng, progress)
    return args, generator, critic, iterator, train_step, progress


def critic_schedule(variant, args):
    """[(label, critic updates per generator step)]: the regular rate, and WGAN's warm-up rate if it is on."""
    if variant == "dcgan":
        return [("1", 1)]
    if variant == "wgan":
        regular = wgan.critic_iters(wgan.WARMUP_STEPS + 1, args.n_critic, args.critic_warmup)
        warm = wgan.critic_iters(0, args.n_critic, args.critic_warmup)
        return [(str(regular), regular)] + ([(f"{warm} (warm-up)", warm)] if warm != regular else [])
    return [(str(args.n_critic), args.n_critic)]


def time_steps(step, steps, warmup, budget):
    """(calls timed, seconds) of step(), which returns the logged values: up to `warmup` untimed calls, then up to
    `steps` timed ones, blocking on the result at the end only. Each phase stops early, after at least one call,
    once it has taken `budget` seconds (a precision with no fast kernels on this machine can take a minute a step)."""
    start = time.perf_counter()
    for _ in range(warmup):
        metrics = step()
        if time.perf_counter() - start > budget:
            break
    if warmup:
        float(tf.nest.flatten(metrics)[0])  # tracing and warm-up finished before the clock starts
    done, start = 0, time.perf_counter()
    while done < steps and (done == 0 or time.perf_counter() - start < budget):
        metrics = step()
        done += 1
    float(tf.nest.flatten(metrics)[0])
    return done, time.perf_counter() - start


def one_step(variant, train_step, iterator, progress, n_critic):
    """A call of one generator step at `n_critic` critic updates: WGAN's warm-up is a function of the step counter,
    so its warm-up rate is timed at step 0 and its regular rate at step 26 onwards."""
    one = tf.constant(1)
    if variant == "wgan":
        warm = n_critic == wgan.WARMUP_ITERS
        progress.step.assign(0 if warm else wgan.WARMUP_STEPS + 1)

        def step():
            if warm:
                progress.step.assign(0)
            return train_step(iterator, one)
        return step
    return lambda: train_step(iterator, one)


def pipeline_rate(iterator, batch, seconds):
    """Real images/s the input pipeline delivers on its own: batches pulled from the script's own (distributed)
    iterator as fast as it yields them for `seconds`, after what it had prefetched is drained. Above the training
    row's real images/s, the device need never wait for data (the pipeline runs ahead while a step computes)."""
    for _ in range(8):
        next(iterator)
    pulled, start = 0, time.perf_counter()
    while pulled == 0 or time.perf_counter() - start < seconds:
        last = next(iterator)
        pulled += 1
    for part in tf.nest.flatten(last, expand_composites=True):  # one tensor per replica
        part.numpy()
    return pulled * batch / (time.perf_counter() - start)


def ceiling_key(args, critic):
    return args.precision, conv_description(largest_conv(critic), args.batch_size)


def ceiling(variant, flags, known, ceilings):
    """Measure the ceilings for this variant's critic and batch size in ceilings[key], unless already there."""
    args = MODULES[variant].parse_args(flags)
    keras.backend.clear_session()
    devices.set_precision(args.precision)
    critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm, arch=args.arch)
    key = ceiling_key(args, critic)
    if key in ceilings:
        return
    dtype = keras.config.dtype_policy().compute_dtype  # what the networks compute in at this precision
    ceilings[key] = dict(
        precision=args.precision, dtype=dtype, conv=key[1],
        conv_gflops=conv_ceiling(largest_conv(critic), args.batch_size, dtype, known.ceiling_seconds),
        matmul=f"{known.matmul_size}^3", matmul_gflops=matmul_ceiling(known.matmul_size, dtype, known.ceiling_seconds))
    print(f"  ceiling {args.precision} ({dtype}): conv {ceilings[key]['conv_gflops']:.1f} GFLOP/s ({key[1]}), matmul "
          f"{ceilings[key]['matmul_gflops']:.1f} GFLOP/s", file=sys.stderr, flush=True)


def bench(variant, flags, steps, warmup, budget, pipeline_seconds):
    """(rows, notes) for one variant at one precision and XLA setting: a dict per timed row, a line per skipped one."""
    args, generator, critic, iterator, train_step, progress = build(variant, flags)
    schedule = critic_schedule(variant, args)
    regular = schedule[0][1]
    rows, notes = [], []
    for label, n_critic in schedule:
        expected = n_critic / rows[0]["critic_per_s"] if rows else 0.0  # seconds per step at the regular rate
        if expected > budget:  # one call cannot be cut short
            notes.append(f"{variant} {args.precision}, XLA {'on' if args.xla else 'off'}: the n_critic {label} row "
                         f"is skipped; one step would take ~{three_digits(expected)} s at the regular row's rate "
                         f"(--row_seconds {budget:g})")
            continue
        # The warm-up row is timed over as many critic updates as the regular one (at least one generator step).
        n_steps, seconds = time_steps(one_step(variant, train_step, iterator, progress, n_critic),
                                      max(1, round(steps * regular / n_critic)), warmup if n_critic == regular else 1,
                                      budget)
        rate = n_steps / seconds
        rows.append(dict(variant=variant, precision=args.precision, xla=args.xla, batch=args.batch_size,
                         n_critic=label, steps=n_steps, steps_per_s=rate, critic_per_s=rate * n_critic,
                         images_per_s=rate * n_critic * args.batch_size,
                         gflop_per_step=step_flops(variant, generator, critic, args.batch_size, n_critic,
                                                  getattr(args, "gen_batch_multiple", 1)) / 1e9,
                         ceiling=ceiling_key(args, critic)))
        print(f"  {variant} {args.precision} xla={args.xla} n_critic {label}: {rate:.3g} generator steps/s "
              f"({n_steps} steps in {seconds:.1f} s)", file=sys.stderr, flush=True)
    pipeline = pipeline_rate(iterator, args.batch_size, pipeline_seconds)
    for row in rows:
        row["pipeline_images_per_s"] = pipeline
    return rows, notes


# ------------------------------------------------------------------------------------ the fixed cost of a step
NEGLIGIBLE = ["--width", "2", "--batch_size", "2", "--z_dim", "2", "--image_size", "32"]  # compute ~ 0
ROUND_SECONDS = 1.0  # the least time a round of a fixed-cost row is timed for


def op_count(function, *args):
    """Ops in the graph of a tf.function for these arguments, counting those of every function it calls."""
    graph_def = function.get_concrete_function(*args).graph.as_graph_def()
    return len(graph_def.node) + sum(len(f.node_def) for f in graph_def.library.function)


def microseconds_per_step(step, steps_per_call, steps, budget):
    """µs per generator step of step(), which runs steps_per_call of them, timed over about `steps` steps and for at
    least ROUND_SECONDS (a tenth of a second is too short to time on a shared machine)."""
    calls, seconds = time_steps(step, max(1, steps // steps_per_call), 3, budget)
    if seconds < ROUND_SECONDS:
        calls, seconds = time_steps(step, math.ceil(calls * ROUND_SECONDS / seconds), 0, budget)
    return 1e6 * seconds / (calls * steps_per_call)


def plain_step(variant, xla, args):
    """A plain TF2/Keras step of the variant (experiments/dcgan_gap.py: stock Keras layers, one tf.function, two
    Keras optimizers) on the script's --width, --z_dim and --batch_size (32x32x1): (a call of one generator step, a
    call of n steps in one compiled call (n a tensor), its op count), or Nones where there is no plain XLA step."""
    import dcgan_gap as plain
    keras.utils.set_random_seed(0)
    cfg = plain.PLAIN_WGAN_GP if variant == "wgan_gp" else plain.PLAIN
    generator = plain.plain_generator(cfg, width=args.width, z_dim=args.z_dim)
    critic = plain.plain_critic(cfg, layer_norm=variant == "wgan_gp", width=args.width)
    rng = tf.random.Generator.from_seed(0)
    batch = tf.zeros([args.batch_size, 32, 32, 1])
    if variant == "dcgan":
        step = plain.make_plain_dcgan_step(cfg, generator, critic, *plain.make_optimizers(cfg, False), rng)
        if xla:
            step = tf.function(step.python_function, jit_compile=True)
        argument = batch
    elif xla:  # the plain WGAN steps read their batches from an iterator, which XLA cannot compile
        return None, None, None
    else:
        if variant == "wgan":
            opts = (keras.optimizers.RMSprop(5e-5), keras.optimizers.RMSprop(5e-5))
            step = plain.make_plain_wgan_step(generator, critic, *opts, rng)
        else:
            step = plain.make_plain_wgan_gp_step(generator, critic, *plain.make_optimizers(cfg, True), rng)
        argument = iter(tf.data.Dataset.from_tensors(batch).repeat())

    @tf.function
    def steps_in_one_call(n):  # the same step without a Python call per step: what a call costs is left out
        losses = (tf.zeros([]), tf.zeros([]))
        for _ in tf.range(n):
            losses = step(argument)
        return losses
    return (lambda: step(argument)), steps_in_one_call, op_count(step, argument)


def loop_microseconds(variant, network, xla, per_call, steps, guess):
    """µs per generator step of the script's whole loop (main(): logging, the loop's bookkeeping, the calls), from
    the steps_per_sec it writes to metrics.jsonl over the second half of its steps (the first half traces): `steps`,
    or more, so that the second half lasts about ROUND_SECONDS at `guess` µs per step. WGAN runs without its
    warm-up, as in the step rows: its 100 critic updates per step would fill a short run."""
    import json
    import tempfile
    half = max(1, steps // 2, math.ceil(ROUND_SECONDS / (guess * 1e-6)))
    with tempfile.TemporaryDirectory() as out:
        MODULES[variant].main(["--strategy", "one", *network, "--steps", str(2 * half), "--log_every", str(half),
                               "--sample_every", str(2 * half), "--ckpt_every", str(2 * half), "--out_dir", out,
                               "--steps_per_call", str(per_call)] + ["--xla"] * xla
                              + ["--no-critic_warmup"] * (variant == "wgan"))
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    return 1e6 / rows[1]["steps_per_sec"]


def fixed_cost(variant, network, xla, per_call, steps, budget, rounds):
    """One row of the fixed-cost table: µs per generator step on the network of the flags `network` (negligible
    compute: NEGLIGIBLE), ours at one call per step and at per_call steps per call, the plain step's at one call
    per step and per_call in one call, op counts."""
    flags = ["--strategy", "one", *network] + ["--xla"] * xla + ["--no-critic_warmup"] * (variant == "wgan")
    args, _, _, iterator, train_step, _ = build(variant, flags)
    one, many = tf.constant(1), tf.constant(per_call)
    plain, plain_steps, plain_ops = plain_step(variant, xla, args)
    calls = {"ours_1": (lambda: train_step(iterator, one), 1), "ours_k": (lambda: train_step(iterator, many), per_call),
             "plain": (plain, 1), "plain_k": ((lambda: plain_steps(many)) if plain_steps else None, per_call)}
    # Rounds of ours and plain in turn, the median of each: a machine's load drifts over minutes.
    times = {key: statistics.median(microseconds_per_step(call, k, steps, budget) for _ in range(rounds))
             if call else float("nan") for key, (call, k) in calls.items()}
    row = dict(variant=variant, xla_text="on" if xla else "off", ops=op_count(train_step, iterator, one),
               plain_ops=plain_ops or "n/a", **times, ratio=times["ours_1"] / times["plain"],
               **{key: statistics.median(loop_microseconds(variant, network, xla, k, steps, times[guess])
                                         for _ in range(rounds))
                  for key, k, guess in (("loop_1", 1, "ours_1"), ("loop_k", common.STEPS_PER_CALL, "ours_k"))})
    print(f"  fixed cost {variant} xla={xla}: ours {row['ours_1']:.0f} / {row['ours_k']:.0f} µs, plain "
          f"{row['plain']:.0f} µs", file=sys.stderr, flush=True)
    return row


def fastest(rows, per_call):
    """A line per variant: which of XLA off/on and 1 or per_call steps per call took the least time per step."""
    lines = []
    for variant in dict.fromkeys(row["variant"] for row in rows):
        times = {(row["xla_text"], k): row[key] for row in rows if row["variant"] == variant
                 for k, key in ((1, "ours_1"), (per_call, "ours_k"))}
        (xla, k), best = min(times.items(), key=lambda item: item[1])
        lines.append(f"- {variant}: fastest here with XLA {xla} and --steps_per_call {k}: {best:.0f} µs per step")
    return lines


def fixed_cost_columns(per_call):
    return [("variant", "variant", "text"), ("XLA", "xla_text", "text"),
            ("ours, µs/step, 1 per call", "ours_1", "num"),
            (f"ours, µs/step, {per_call} per call", "ours_k", "num"), ("ours, ops", "ops", "int"),
            ("whole loop, µs/step, 1 per call", "loop_1", "num"),
            (f"whole loop, µs/step, default ({common.STEPS_PER_CALL})", "loop_k", "num"),
            ("plain Keras, µs/step", "plain", "num"), (f"plain, µs/step, {per_call} in one call", "plain_k", "num"),
            ("plain, ops", "plain_ops", "int"),
            ("ours (1 per call) / plain", "ratio", "num")]


def three_digits(x):
    """x to 3 significant digits, without an exponent: 0.0339, 26.3, 538, 5402."""
    text = f"{x:.3g}"
    return f"{x:.0f}" if "e" in text else text


def table(rows, columns):
    """Markdown table of dicts; columns are (heading, key, kind), kind "text", "int" or "num" (3 digits)."""
    show = {"text": str, "int": str, "num": three_digits}
    lines = ["| " + " | ".join(heading for heading, _, _ in columns) + " |",
             "| " + " | ".join("---" if kind == "text" else "---:" for _, _, kind in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(show[kind](row[key]) for _, key, kind in columns) + " |")
    return lines


RESULT_COLUMNS = [("variant", "variant", "text"), ("precision", "precision", "text"), ("XLA", "xla_text", "text"),
                  ("batch", "batch", "int"), ("n_critic", "n_critic", "text"), ("steps timed", "steps", "int"),
                  ("generator steps/s", "steps_per_s", "num"), ("critic updates/s", "critic_per_s", "num"),
                  ("real images/s", "images_per_s", "num"), ("GFLOP/step", "gflop_per_step", "num"),
                  ("GFLOP/s", "gflop_per_s", "num"), ("% of conv ceiling", "conv_share", "num"),
                  ("% of matmul ceiling", "matmul_share", "num"),
                  ("input pipeline alone, images/s", "pipeline_images_per_s", "num")]
CEILING_COLUMNS = [("precision", "precision", "text"), ("compute dtype", "dtype", "text"),
                   ("critic's largest conv, forward", "conv", "text"), ("conv GFLOP/s", "conv_gflops", "num"),
                   ("matmul", "matmul", "text"), ("matmul GFLOP/s", "matmul_gflops", "num")]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--variants", nargs="+", default=list(MODULES), choices=list(MODULES), help="training scripts to time")
    add("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
        help="the scripts' --precision values to time")
    add("--xla", default="both", choices=("both", "off", "on"), help="time without/with --xla")
    add("--steps", type=int, default=50, help="timed generator steps per row")
    add("--warmup", type=int, default=5, help="untimed generator steps first (tracing, autotuning)")
    add("--row_seconds", type=float, default=120,
        help="time budget of a row's warm-up, and of its timed steps: fewer steps if exceeded")
    add("--matmul_size", type=int, default=4096, help="n of the n x n x n matmul ceiling")
    add("--ceiling_seconds", type=float, default=1.5, help="timing budget of each ceiling")
    add("--pipeline_seconds", type=float, default=2.0, help="timing budget of the input pipeline alone, per variant")
    add("--folder_images", type=int, default=0,
        help="if > 0: train on a generated folder of this many RGB JPEGs (--dataset folder)")
    add("--folder_dir", default=None,
        help="where that folder is made and kept (default: $GAN_CACHE, else ~/.cache/tf-gans, /bench-folder-N)")
    add("--fixed_cost", action="store_true",
        help="instead: the fixed cost of a step, each variant on a negligible network, ours and a plain Keras step")
    add("--per_call", type=int, default=50, help="with --fixed_cost: the steps per call of the K column")
    add("--rounds", type=int, default=3, help="with --fixed_cost: rounds of every row, their median reported")
    add("--batchnorm", default="fused", choices=("fused", "composed"),
        help="with --fixed_cost, for analysis: 'composed' trains ops.BatchNormalization through Keras' own "
             "computation instead of TensorFlow's fused kernel, as the plain step's BatchNorm does")
    known, flags = parser.parse_known_args(argv)  # everything else goes to the scripts' own parsers
    if known.steps < 1 or known.warmup < 0 or known.per_call < 1 or known.rounds < 1:
        parser.error("--steps, --per_call and --rounds must be at least 1 and --warmup at least 0")
    if any(f == "--precision" or f.startswith("--precision=") for f in flags):
        parser.error("--precision is set per row; use --precisions")
    if known.fixed_cost:
        network = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        for name in ("--width", "--batch_size", "--z_dim"):
            network.add_argument(name, type=int)
        if network.parse_known_args(flags)[1]:  # "--width 64" and "--width=64" alike
            parser.error("--fixed_cost takes only --width, --batch_size and --z_dim of the script flags")
    if not known.fixed_cost and not any(f == "--strategy" or f.startswith("--strategy=") for f in flags):
        flags = ["--strategy", "one", *flags]  # one device unless asked (XLA compiles one device's step only)
    if known.folder_images > 0 and any(f.split("=")[0] in ("--dataset", "--data_dir", "--channels") for f in flags):
        parser.error("--folder_images sets --dataset, --data_dir and --channels")
    return known, flags


def fixed_cost_table(known, flags):
    """The fixed-cost table: every variant, XLA off and on, measured one after the other in this process."""
    network = [*NEGLIGIBLE, *flags]  # later flags win: --width 64 --batch_size 64 --z_dim 100 for the real network
    fused = ops.BatchNormalization.call
    if known.batchnorm == "composed":  # analysis only: what the fused kernel costs or saves against Keras' own
        ops.BatchNormalization.call = keras.layers.BatchNormalization.call
    try:
        rows = [fixed_cost(variant, network, xla, known.per_call, known.steps, known.row_seconds, known.rounds)
                for xla in {"both": (False, True), "off": (False,), "on": (True,)}[known.xla]
                for variant in known.variants]
    finally:  # main() may be called again in this process (the tests do)
        ops.BatchNormalization.call = fused
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")
    return [f"## The fixed cost of a generator step (fp32; {' '.join(network)})", "", *machine_header(),
            f"- TF_ENABLE_ONEDNN_OPTS: {onednn}; BatchNorm: {known.batchnorm} (--batchnorm)", "",
            *table(rows, fixed_cost_columns(known.per_call)), "", *fastest(rows, known.per_call), "",
            "µs per generator step of the train step alone, on a network whose compute is negligible: what a step "
            "costs beyond its arithmetic (dispatching ops, Python, function calls). Ours: the script's own "
            "make_train_step; whole loop: the script's main() at --steps_per_call 1 and at its default, from the "
            "steps_per_sec it logs over the second half of --steps; both without WGAN's warm-up. Plain: one "
            "tf.function of stock Keras layers and two Keras optimizers (experiments/dcgan_gap.py), with "
            "jit_compile=True in the XLA rows (DCGAN only: the plain WGAN steps read an iterator inside the function, "
            "which XLA cannot compile); plain in one call: the same step run --per_call times in a tf.range loop of "
            "one tf.function, its cost without a Python call per step. Every time is the median of --rounds rounds "
            "of a second or more. Ops: the step graph's, counting the functions it calls."]


def throughput_table(known, flags):
    header = machine_header()
    rows, notes, ceilings = [], [], {}
    if known.folder_images > 0:
        root = os.environ.get("GAN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tf-gans")
        folder = known.folder_dir or os.path.join(root, f"bench-folder-{known.folder_images}")
        start = time.perf_counter()
        make_folder(folder, known.folder_images)
        print(f"  folder {folder}: {known.folder_images} JPEGs ready in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
        flags = [*flags, "--dataset", "folder", "--data_dir", folder, "--channels", "3"]
        notes += folder_notes(flags)
    for precision in known.precisions:
        for variant in known.variants:  # the ceilings first, while nothing else runs in this process
            ceiling(variant, [*flags, "--precision", precision], known, ceilings)
        for xla in {"both": (False, True), "off": (False,), "on": (True,)}[known.xla]:
            for variant in known.variants:
                run_flags = [*flags, "--precision", precision] + (["--xla"] if xla else [])
                new_rows, new_notes = bench(variant, run_flags, known.steps, known.warmup, known.row_seconds,
                                            known.pipeline_seconds)
                notes += new_notes
                rows += [with_shares(row, ceilings) for row in new_rows]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"## Training throughput ({', '.join(known.variants)}; script flags: {' '.join(flags)})", "",
             *header, f"- load average at the end: {load}", "",
             *table(ceilings.values(), CEILING_COLUMNS), "", *table(rows, RESULT_COLUMNS), ""]
    if notes:
        lines += [f"- {note}" for note in notes] + [""]
    lines.append(FLOPS_NOTE)
    return lines


def with_shares(row, ceilings):
    top = ceilings[row.pop("ceiling")]
    row.update(xla_text="on" if row["xla"] else "off", gflop_per_s=row["gflop_per_step"] * row["steps_per_s"])
    row.update(conv_share=100 * row["gflop_per_s"] / top["conv_gflops"],
               matmul_share=100 * row["gflop_per_s"] / top["matmul_gflops"])
    return row


FLOPS_NOTE = ("FLOPs: multiply-adds (2 FLOPs) of every Dense, Conv2D and Conv2DTranspose layer (and the ResNet's mean "
              "pooling and residual sums), forward and backward (input and weight gradients; the WGAN-GP penalty's "
              "double backward included), counted from the networks; real images/s = generator steps/s x n_critic x "
              "batch; the input pipeline alone: the batches the script's own data iterator yields with no training, "
              "for --pipeline_seconds (above the row's real images/s, the device need not wait for data). The "
              "ceilings are TF's own kernels without XLA, timed in this process, so a share above 100% can happen "
              "(and a ceiling taken while other programs run is low).")


def main(argv=None):
    known, flags = parse_args(argv)
    if known.fixed_cost:
        print("\n".join(fixed_cost_table(known, flags)))
    else:
        print("\n".join(throughput_table(known, flags)))


if __name__ == "__main__":
    main()

"""Issue 16: why a plain TF2 DCGAN learns more per generator step than dcgan.py, one difference at a time.

    python benchmarks/dcgan_ablation.py --configs ours plain --seeds 0 1 2 --steps 2000 --csv docs/dcgan_gap.csv
    python benchmarks/dcgan_ablation.py --configs ours+bn_eps ours+fit --seeds 0 --steps 2000 --csv docs/dcgan_gap.csv
    python benchmarks/dcgan_ablation.py --configs dcgan.py --seeds 0 --steps 2000 --csv docs/dcgan_gap.csv
    python benchmarks/dcgan_ablation.py --summary docs/dcgan_gap.csv          # the mean +- std table
    python benchmarks/dcgan_ablation.py --summary docs/dcgan_gap.csv --compare dcgan.py plain   # t and p
    python benchmarks/dcgan_ablation.py --configs factorial --seeds 100 --csv docs/dcgan_gap_factorial.csv
    python benchmarks/dcgan_ablation.py --summary docs/dcgan_gap_factorial.csv --effects   # each switch's effect
    python benchmarks/dcgan_ablation.py --configs dcgan.py plain --seeds 0 1 2 --minutes 5 --steps 100000 \
        --eval_every 0 --csv docs/dcgan_gap_5min.csv                         # equal time: 5 training minutes each
    python benchmarks/dcgan_ablation.py --configs wgan_gp.py plain_wgan_gp --steps 500 --eval_every 250 \
        --csv docs/wgan_gp_gap.csv                                           # issue 16, item 3: the WGAN-GP pair
    python benchmarks/dcgan_ablation.py --quick                               # a smoke test (seconds)

Configs. "plain" is the reference implementation of issue 16 (below, PLAIN REFERENCE: Keras defaults, a new user's
first DCGAN); "ours" is the same code with each switch set to dcgan.py's value; "ours+X" is ours with switch X set
to plain's value (one difference at a time), "plain+X" plain with X set to ours'. "dcgan.py" runs the real script
(`dcgan.py --batch_size 64`) as a subprocess, to check that "ours" reproduces it. Since session 12 dcgan.py's
default first BatchNorm is per feature, so the script is "ours+g_bn0"; "ours" keeps its name and its values.
Every config is batch 64, z 100-d N(0, I), Adam(2e-4, 0.5, 0.999), the losses of dcgan.py (imported), on
Fashion-MNIST.

WGAN-GP (item 3 of the issue): "plain_wgan_gp" is the same plain set-up trained as the issue's plain WGAN-GP (PLAIN
WGAN-GP REFERENCE below: Keras LayerNormalization(axis=[1, 2, 3]) in the critic, Adam(1e-4, 0, 0.9) with Keras'
epsilon, lambda 10, n_critic 5, a fresh real batch, z and epsilon per critic update), "wgan_gp.py" the real script
(`wgan_gp.py --batch_size 64`), "ours_wgan_gp" wgan_gp.py's algorithm in this harness, and "ours_wgan_gp+X" /
"plain_wgan_gp+X" flip switch X as above (the generator's switches, `fit`, `adam_eps`, and `ln`, the critic's
layer normalisation; `z` is DCGAN's only: WGAN-GP draws a fresh z for every update in both programs).

Budgets. --steps N trains N generator steps. --minutes M instead stops a run after M minutes of *training* time
(the step clock; evaluation and start-up excluded; the scripts' own --minutes counts the same way) and scores it
there: equal time rather than equal steps, so the faster program gets more steps. Run the two programs of a pair
side by side (--threads 1 each) or one after another on an idle machine, never beside other work.

Scoring. classifier_fd of this project (metrics.py's offline classifier, 10,000 samples drawn in inference mode,
noise seed = run seed + 1, as dcgan.py's --eval_every) every --eval_every steps. The classifier and its reference
statistics are those of data.py's 32x32 images, made by *resizing* 28 -> 32. A generator trained on *padded* images
draws a black 2-pixel frame around a 28x28 garment, so it is scored twice: `fd_own` against the statistics of the
padded real images (the same classifier: each run in its own geometry), and `fd_resized` after cropping the frame
and resizing 28 -> 32 exactly as data.py does (each run in the project's geometry). For resized runs both are equal.

Threads: --threads sets TensorFlow's intra- and inter-op pools (1 each lets two processes share 2 cores).
"""
import argparse
import csv
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import common  # noqa: E402
import data  # noqa: E402
import dcgan  # noqa: E402
import metrics  # noqa: E402
import ops  # noqa: E402

# switch: (dcgan.py's value, the plain implementation's value)
SWITCHES = {
    "fit": ("resize", "pad"),          # 28 -> 32: data.py's bilinear resize, or a 2-pixel border of -1 (black)
    "bn_eps": (1e-5, 1e-3),            # BatchNorm epsilon: ops.batch_norm (PyTorch's), Keras' default
    "bn_momentum": (0.9, 0.99),        # moving averages (inference only): ops.batch_norm, Keras' default
    "bn_op": ("fused", "keras"),       # ops.BatchNormalization (FusedBatchNormV3, unbiased moving variance) or
                                       # keras.layers.BatchNormalization (composed ops, biased moving variance)
    "g_bn0": ("channel", "feature"),   # G's first BN: after the reshape, per channel (dcgan.py before session 12,
                                       # dcgan.torch, pytorch/examples), or on the dense output, per feature (the TF
                                       # tutorial, Newmu/dcgan_code; dcgan.py's --first_bn default since session 12)
    "adam_eps": (1e-8, 1e-7),          # dcgan.make_optimizers (TF1/PyTorch), Keras' default
    "z": ("redraw", "reuse"),          # a fresh z for the G update, or the D update's z again
}
# WGAN-GP's switches: DCGAN's but z (both programs draw a fresh z per update), and the critic's layer normalisation
WGAN_GP_SWITCHES = {**{k: v for k, v in SWITCHES.items() if k != "z"},
                    "ln": ("tflib", "keras")}  # ops.LayerNorm (a scale per channel, eps 1e-5: the authors' tflib),
                                               # or keras LayerNormalization(axis=[1, 2, 3]) (per element, eps 1e-3)
OURS = {k: v[0] for k, v in SWITCHES.items()}
DCGAN_PY = dict(OURS, g_bn0="feature")  # dcgan.py's defaults since session 12 (--first_bn feature): ours+g_bn0
SCRIPTS = ("dcgan.py", "wgan_gp.py")  # configs that run the project's script itself
PLAIN_WGAN_GP = "plain_wgan_gp"
N_CRITIC, GP_WEIGHT = 5, 10.0
PLAIN = {k: v[1] for k, v in SWITCHES.items()}
OURS_WGAN_GP = {k: v[0] for k, v in WGAN_GP_SWITCHES.items()}
PLAIN_WGAN_GP_CFG = {k: v[1] for k, v in WGAN_GP_SWITCHES.items()}
BATCH, Z_DIM, SIZE = 64, 100, 32


def factorial_design():
    """The seven DCGAN switches in 16 runs, a 2^(7-3) fractional factorial of resolution IV: each switch is at
    plain's value in 8 runs and at ours' in 8, every pair of switch columns is orthogonal, and no main effect is
    aliased with a two-switch interaction (only with interactions of three or more). Built as 8 runs of a resolution
    III design (fit, bn_eps, g_bn0 in full; z = fit*bn_eps, adam_eps = fit*g_bn0, bn_momentum = bn_eps*g_bn0,
    bn_op = fit*bn_eps*g_bn0, with +1 = plain's value) and their fold-over (every switch flipped). It holds both
    corners, plain (run 7) and ours (run 15). -> config names, "ours+X+Y..."."""
    order = ("fit", "bn_eps", "g_bn0", "z", "adam_eps", "bn_momentum", "bn_op")
    half = [(a, b, c, a * b, a * c, b * c, a * b * c) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]
    return ["+".join(["ours"] + [s for s, v in zip(order, levels) if v > 0])
            for levels in half + [tuple(-v for v in levels) for levels in half]]


FACTORIAL = factorial_design()  # --configs factorial
FIELDS = ("config", "seed", "step", "train_seconds", "fd_own", "fd_resized", "fd_padded", *SWITCHES, "ln", "budget")


def config(name):
    """'plain', 'ours', 'ours+X[+Y]', 'plain+X', and the same with 'plain_wgan_gp' / 'ours_wgan_gp' ->
    {switch: value}."""
    base, *flips = name.split("+")
    bases = {"ours": (OURS, SWITCHES), "plain": (PLAIN, SWITCHES), "ours_wgan_gp": (OURS_WGAN_GP, WGAN_GP_SWITCHES),
             PLAIN_WGAN_GP: (PLAIN_WGAN_GP_CFG, WGAN_GP_SWITCHES)}
    if base not in bases or any(f not in bases[base][1] for f in flips):
        raise common.RunError(f"unknown config {name!r}: use ours, plain, ours+X or plain+X with X in "
                              f"{', '.join(SWITCHES)}; ours_wgan_gp(+X), {PLAIN_WGAN_GP}(+X) with X in "
                              f"{', '.join(WGAN_GP_SWITCHES)}; or a script ({', '.join(SCRIPTS)}).")
    start, switches = bases[base]
    cfg = dict(start)
    for f in flips:
        cfg[f] = switches[f][1] if base.startswith("ours") else switches[f][0]
    return cfg


def is_wgan_gp(name):
    return name.split("+")[0].endswith("wgan_gp")


# ------------------------------------------------------------------ PLAIN REFERENCE (issue 16), with the switches
def batch_norm(cfg):
    layer = ops.BatchNormalization if cfg["bn_op"] == "fused" else keras.layers.BatchNormalization
    return layer(momentum=cfg["bn_momentum"], epsilon=cfg["bn_eps"],
                 gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02))


def plain_generator(cfg):
    """z [B, 100] -> [B, 32, 32, 1]: Dense 4*4*256 -> BN -> ReLU -> convT 128, 64 (BN, ReLU) -> convT 1, tanh."""
    init, z = ops.conv_init(), keras.Input((Z_DIM,))
    x = keras.layers.Dense(4 * 4 * 256, use_bias=False, kernel_initializer=init)(z)
    if cfg["g_bn0"] == "feature":  # BN over 4096 features, statistics over the batch only
        # as [B, 1, 1, 4096], ops.make_generator's layout, which the fused kernel takes (Keras' BN gives the same
        # bits either way); before session 12 the fused arms fell back to Keras' BN here on [B, 4096]
        x = keras.layers.Reshape((1, 1, 4096))(x)
        x = keras.layers.Reshape((4, 4, 256))(keras.layers.ReLU()(batch_norm(cfg)(x)))
    else:  # BN over 256 channels, statistics over batch x 4 x 4
        x = keras.layers.ReLU()(batch_norm(cfg)(keras.layers.Reshape((4, 4, 256))(x)))
    for filters in (128, 64):
        x = keras.layers.Conv2DTranspose(filters, 4, 2, padding="same", use_bias=False, kernel_initializer=init)(x)
        x = keras.layers.ReLU()(batch_norm(cfg)(x))
    x = keras.layers.Conv2DTranspose(1, 4, 2, padding="same", kernel_initializer=init)(x)
    return keras.Model(z, keras.layers.Activation("tanh")(x), name="plain_generator")


def critic_layer_norm(cfg):
    if cfg["ln"] == "tflib":
        return ops.LayerNorm()
    return keras.layers.LayerNormalization(axis=[1, 2, 3])


def plain_critic(cfg, layer_norm=False):
    """[B, 32, 32, 1] -> [B, 1] logits: conv 64 (bias), LReLU -> conv 128, 256 (BN, LReLU) -> Flatten -> Dense 1.
    layer_norm: WGAN-GP's critic, layer normalisation (cfg["ln"]) in place of BN."""
    init, x_in = ops.conv_init(), keras.Input((SIZE, SIZE, 1))
    x = keras.layers.LeakyReLU(0.2)(keras.layers.Conv2D(64, 4, 2, padding="same", kernel_initializer=init)(x_in))
    for filters in (128, 256):
        x = keras.layers.Conv2D(filters, 4, 2, padding="same", use_bias=False, kernel_initializer=init)(x)
        norm = critic_layer_norm(cfg) if layer_norm else batch_norm(cfg)
        x = keras.layers.LeakyReLU(0.2)(norm(x))
    x = keras.layers.Dense(1, kernel_initializer=init)(keras.layers.Flatten()(x))
    return keras.Model(x_in, x, name="plain_critic")


def plain_losses(d_real, d_fake):
    """The plain implementation's softplus form: D: mean softplus(-real) + mean softplus(fake); G: softplus(-fake).
    Equal to dcgan.critic_loss / generator_loss (tests/test_ablation.py), which the train step below uses."""
    return (tf.reduce_mean(tf.nn.softplus(-d_real)) + tf.reduce_mean(tf.nn.softplus(d_fake)),
            tf.reduce_mean(tf.nn.softplus(-d_fake)))


def real_images(fit, split="train"):
    """Fashion-MNIST as uint8 [N, 32, 32, 1]: data.py's resize, or the 28x28 originals padded with black."""
    return data.load_images("fashion_mnist", image_size=SIZE, split=split, fit=fit)


def to_resized(images, fit):
    """uint8 [N, 32, 32, 1] of geometry `fit` -> the project's geometry (crop the padded frame, resize as data.py)."""
    if fit == "resize":
        return images
    return data._resize_uint8(images[:, 2:-2, 2:-2], SIZE, 1).numpy()


def to_padded(images, fit):
    """uint8 [N, 32, 32, 1] of geometry `fit` -> the padded geometry (resized images shrunk 32 -> 28 and padded)."""
    if fit == "pad":
        return images
    return np.pad(data._resize_uint8(images, 28, 1).numpy(), ((0, 0), (2, 2), (2, 2), (0, 0)))


def make_train_step(cfg, generator, critic, g_opt, c_opt, rng):
    @tf.function
    def train_step(real):
        z = rng.normal([BATCH, Z_DIM])
        with tf.GradientTape() as tape:  # (1) D: real and fake as separate calls, as in both programs
            d_real = critic(real, training=True)
            d_fake = critic(generator(z, training=True), training=True)
            d_loss = tf.reduce_mean(dcgan.critic_loss(d_real, d_fake))
        c_opt.apply_gradients(zip(tape.gradient(d_loss, critic.trainable_variables), critic.trainable_variables))
        if cfg["z"] == "redraw":
            z = rng.normal([BATCH, Z_DIM])
        with tf.GradientTape() as tape:  # (2) G: non-saturating
            g_loss = tf.reduce_mean(dcgan.generator_loss(critic(generator(z, training=True), training=True)))
        g_opt.apply_gradients(zip(tape.gradient(g_loss, generator.trainable_variables),
                                  generator.trainable_variables))
        return d_loss, g_loss
    return train_step


# ------------------------------------------------------------------ PLAIN WGAN-GP REFERENCE (issue 16, item 3)
def make_wgan_gp_step(generator, critic, g_opt, c_opt, rng):
    """Algorithm 1 as a new user writes it: n_critic updates, each on a fresh real batch with its own z and
    epsilon, loss D(fake) - D(real) + lambda (||grad D(x_hat)|| - 1)^2, then one generator update, -D(G(z))."""
    def critic_update(real):
        fake = generator(rng.normal([BATCH, Z_DIM]), training=True)
        eps = rng.uniform([BATCH, 1, 1, 1])
        with tf.GradientTape() as tape:
            d_real, d_fake = critic(real, training=True), critic(fake, training=True)
            x_hat = eps * real + (1.0 - eps) * fake
            with tf.GradientTape() as inner:
                inner.watch(x_hat)
                d_hat = critic(x_hat, training=True)
            norm = tf.norm(tf.reshape(inner.gradient(d_hat, x_hat), [BATCH, -1]), axis=1)
            loss = tf.reduce_mean(d_fake) - tf.reduce_mean(d_real) + GP_WEIGHT * tf.reduce_mean(tf.square(norm - 1.0))
        c_opt.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables))
        return loss

    @tf.function
    def train_step(iterator):
        for _ in range(N_CRITIC):
            d_loss = critic_update(next(iterator))
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(critic(generator(rng.normal([BATCH, Z_DIM]), training=True), training=True))
        g_opt.apply_gradients(zip(tape.gradient(g_loss, generator.trainable_variables),
                                  generator.trainable_variables))
        return d_loss, g_loss
    return train_step


class Scorer:
    """classifier_fd in the run's own geometry, in the project's (resized) one and in the padded one."""

    def __init__(self):
        self.resized = metrics.make_scorer("classifier_fd", "fashion_mnist", image_size=SIZE, channels=1)
        self.network, _ = metrics.classifier_network("fashion_mnist", image_size=SIZE, channels=1)
        self.padded_stats = None

    def __call__(self, images, fit):
        """-> (fd_own, fd_resized, fd_padded)"""
        resized = self.resized(to_resized(images, fit))["classifier_fd"]
        if self.padded_stats is None:
            self.padded_stats = metrics.statistics(metrics._features(self.network, real_images("pad"), 500)[0])
        padded = metrics.frechet_distance(
            *metrics.statistics(metrics._features(self.network, to_padded(images, fit), 500)[0]), *self.padded_stats)
        return (resized if fit == "resize" else padded), resized, padded


def make_optimizers(cfg, wgan_gp, epsilon=None):
    """(G's Adam, D's Adam): DCGAN's (2e-4, 0.5, 0.999) or WGAN-GP's (1e-4, 0, 0.9), epsilon cfg["adam_eps"] unless
    given."""
    lr, beta_1, beta_2 = (1e-4, 0.0, 0.9) if wgan_gp else (2e-4, 0.5, 0.999)
    eps = cfg["adam_eps"] if epsilon is None else epsilon
    return tuple(keras.optimizers.Adam(lr, beta_1=beta_1, beta_2=beta_2, epsilon=eps) for _ in "gc")


def train(name, seed, steps, eval_every, scorer, eval_samples=10_000, images=None, minutes=0):
    """Yields one row per evaluation of config `name` trained with `seed`: every `eval_every` steps (0: none) and at
    the end, after `steps` generator steps or, with `minutes`, once that much training time has passed."""
    cfg = config(name)
    keras.utils.set_random_seed(seed)
    wgan_gp = is_wgan_gp(name)
    generator, critic = plain_generator(cfg), plain_critic(cfg, layer_norm=wgan_gp)
    g_opt, c_opt = make_optimizers(cfg, wgan_gp)
    rng = tf.random.Generator.from_seed(seed)
    x = real_images(cfg["fit"]) if images is None else images
    dataset = (tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
               .batch(BATCH, drop_remainder=True).repeat().map(lambda b: tf.cast(b, tf.float32) / 127.5 - 1.0)
               .prefetch(2))
    batches = iter(dataset)
    if wgan_gp:  # n_critic batches per step, taken inside the compiled step
        step_fn = make_wgan_gp_step(generator, critic, g_opt, c_opt, rng)
        run_step = lambda: step_fn(batches)  # noqa: E731
    else:
        step_fn = make_train_step(cfg, generator, critic, g_opt, c_opt, rng)
        run_step = lambda: step_fn(next(batches))  # noqa: E731
    seconds, budget = 0.0, minutes * 60 or float("inf")
    for step in range(1, steps + 1):
        start = time.perf_counter()
        run_step()[0].numpy()
        seconds += time.perf_counter() - start
        if step % 100 == 0:
            print(f"{name} seed {seed}: step {step}, {seconds:.0f} s of training", file=sys.stderr, flush=True)
        last = step == steps or seconds >= budget
        if (eval_every and step % eval_every == 0) or last:
            fake = common.generate_images(generator, eval_samples, Z_DIM, seed + 1)  # inference mode
            own, resized, padded = scorer(fake, cfg["fit"])
            yield dict(config=name, seed=seed, step=step, train_seconds=round(seconds, 1), fd_own=round(own, 3),
                       fd_resized=round(resized, 3), fd_padded=round(padded, 3), **cfg,
                       budget=f"{minutes:g} min" if seconds >= budget else "")
        if last:
            return


def train_script(script, seed, steps, eval_every, threads, scorer=None, eval_samples=10_000, minutes=0, extra=()):
    """`dcgan.py` or `wgan_gp.py --batch_size 64` itself, as a subprocess: its own --eval_every rows (classifier_fd,
    noise seed + 1), and with `minutes` its --minutes stop, scored here from the run's checkpoint (`scorer`)."""
    with tempfile.TemporaryDirectory() as run_dir:
        env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
        out = os.path.join(run_dir, "run")
        log_every = eval_every or 100
        subprocess.run([sys.executable, os.path.join(ROOT, script), "--batch_size", str(BATCH), "--seed",
                        str(seed), "--steps", str(steps), "--eval_every", str(eval_every), "--log_every",
                        str(log_every), "--sample_every", str(steps), "--ckpt_every", str(steps),
                        "--minutes", str(minutes), "--out_dir", out, *extra],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        seconds = {r["step"]: round(r["train_seconds"], 1) for r in rows if "train_seconds" in r}
        cfg = DCGAN_PY if script == "dcgan.py" else OURS_WGAN_GP
        for row in rows:
            if "eval/classifier_fd" in row and not minutes:
                fd = round(row["eval/classifier_fd"], 3)
                yield dict(config=script, seed=seed, step=row["step"], train_seconds=seconds.get(row["step"], ""),
                           fd_own=fd, fd_resized=fd, **cfg)
        if minutes:  # the run stopped on its clock with a checkpoint there: score it as train() does
            generator, _, path = common.load_generator(out)
            step = int(path.rsplit("-", 1)[1])
            own, resized, padded = scorer(common.generate_images(generator, eval_samples, Z_DIM, seed + 1), "resize")
            yield dict(config=script, seed=seed, step=step, train_seconds=seconds.get(step, ""), fd_own=round(own, 3),
                       fd_resized=round(resized, 3), fd_padded=round(padded, 3), **cfg,
                       budget=f"{minutes:g} min" if seconds.get(step, 0) >= minutes * 60 else "")


def geometry_floor(scorer):
    """classifier_fd of 10,000 *real* test images in each geometry against each geometry's training statistics:
    what a perfect generator would score, and what scoring padded images against resized statistics costs. Then
    the same images converted as runs are scored (fd_resized, fd_padded): padded -> resized (crop, resize) is exact,
    resized -> padded (shrink, pad) blurs, so fd_padded has a floor above zero for a resize-trained run."""
    lines = ["| test images | vs resized train stats | vs padded train stats |", "| --- | ---: | ---: |"]
    converted = ["| test images | fd_resized (converted) | fd_padded (converted) |", "| --- | ---: | ---: |"]
    for fit in ("resize", "pad"):
        images, name = real_images(fit, split="test"), dict(resize="resized", pad="padded")[fit]
        resized = scorer.resized(images)["classifier_fd"]
        own, _, padded = scorer(images, "pad")  # "pad": score as they are against the padded statistics
        lines.append(f"| {name} | {resized:.2f} | {own:.2f} |")
        _, resized, padded = scorer(images, fit)
        converted.append(f"| {name} | {resized:.2f} | {padded:.2f} |")
    return "\n".join(lines + [""] + converted)


def read_rows(paths):
    """Every row of the CSV files, as dicts."""
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def script_as_config(row):
    """A dcgan.py row as the harness config that is dcgan.py step for step: ours, with the switches the row records
    at plain's value flipped (ours before session 12, ours+g_bn0 since: DCGAN_PY)."""
    return "+".join(["ours", *(k for k in SWITCHES if str(row.get(k)) == str(PLAIN[k]))])


def levels(name):
    """A DCGAN config's switches coded as in the factorial: +1 at plain's value, -1 at ours'."""
    cfg = config(name)
    return [1 if cfg[k] == PLAIN[k] else -1 for k in SWITCHES]


def budget(row):
    """A CSV row's budget: "step N" (an evaluation at N generator steps) or "M min" (a --minutes stop)."""
    return row.get("budget") or f"step {int(row['step'])}"


def budget_order(b):  # "step N" by N, then "M min" by M
    minutes = b.endswith("min")
    return minutes, float(b.split()[0 if minutes else 1])


def summary(paths, column="fd_resized"):
    """Markdown: mean +- std (n) of `column` per config and budget (an evaluated step, or a --minutes stop), over
    the rows of the CSV files."""
    rows = read_rows(paths)
    budgets = sorted({budget(r) for r in rows}, key=budget_order)
    names = list(dict.fromkeys(r["config"] for r in rows))
    lines = ["| config | " + " | ".join(budgets) + " |", "| --- |" + " ---: |" * len(budgets)]
    for name in names:
        cells = []
        for b in budgets:
            # the first rows had no fd_padded column: a padded run's fd_own is its fd_padded
            v = np.array([float(r.get(column) or r["fd_own"]) for r in rows
                          if r["config"] == name and budget(r) == b
                          and (r.get(column) or (column == "fd_padded" and r["fit"] == "pad"))])
            cells.append("" if not len(v) else f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f} "
                                               f"({len(v)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(paths, a, b, column="fd_resized", permutations=100_000):
    """Markdown: config `a` against config `b` at each budget both reached: the means, the difference a - b with its
    standard error and Welch's t, and a two-sided permutation p-value (the labels shuffled over the pooled runs,
    `permutations` times, seeded): how often a relabelling gives a difference at least as large. `a` or `b` may
    name several configs joined by commas, pooled into one arm (e.g. "dcgan.py,ours": one algorithm, two programs)."""
    arms = {name: arm for arm in (a, b) for name in arm.split(",")}
    values = {}
    for r in read_rows(paths):
        if r["config"] in arms and r.get(column):
            values.setdefault(budget(r), {}).setdefault(arms[r["config"]], []).append(float(r[column]))
    lines = [f"| budget | {a} | {b} | difference | Welch t | permutation p |", "| --- |" + " ---: |" * 5]
    rng = np.random.default_rng(0)
    for label, by in sorted(values.items(), key=lambda item: budget_order(item[0])):
        if a not in by or b not in by or min(len(by[a]), len(by[b])) < 2:
            continue
        x, y = np.array(by[a]), np.array(by[b])
        diff, se = x.mean() - y.mean(), np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
        pooled = np.concatenate([x, y])
        shuffled = rng.permuted(np.tile(pooled, (permutations, 1)), axis=1)
        null = shuffled[:, :len(x)].mean(1) - shuffled[:, len(x):].mean(1)
        p = (np.sum(np.abs(null) >= abs(diff) - 1e-9) + 1) / (permutations + 1)
        lines.append(f"| {label} | {x.mean():.1f} ± {x.std(ddof=1):.1f} ({len(x)}) | {y.mean():.1f} ± "
                     f"{y.std(ddof=1):.1f} ({len(y)}) | {diff:+.1f} ± {se:.1f} | {diff / se:+.2f} | {p:.3f} |")
    return "\n".join(lines)


def compare_paired(paths, a, b, column="fd_resized"):
    """Markdown: config `a` against config `b` seed by seed, at each budget where both have a run of the same seed.
    For two configs that train identically (e.g. plain and plain+bn_momentum: the moving statistics never feed back
    into training, and the harness is deterministic) the seed's difference is the switch's effect alone, without the
    seed-to-seed noise. Per budget: the seeds, the mean difference a - b with its standard error, t, and the two-sided
    sign-flip p-value (every assignment of signs to the differences, 2^n of them: how often one gives a mean at least
    as far from zero)."""
    if "," in a + b:
        raise common.RunError("--paired compares two configs seed by seed; it does not pool configs joined by commas.")
    values = {}
    for r in read_rows(paths):
        if r["config"] in (a, b) and r.get(column):
            runs = values.setdefault(budget(r), {}).setdefault(r["config"], {})
            if r["seed"] in runs:
                raise common.RunError(f"{r['config']} has two rows for seed {r['seed']} at {budget(r)}; a paired "
                                      f"comparison needs one per seed.")
            runs[r["seed"]] = float(r[column])
    lines = [f"| budget | seeds | {a} − {b} per seed | mean difference | t | sign-flip p |",
             "| --- |" + " ---: |" * 5]
    for label, by in sorted(values.items(), key=lambda item: budget_order(item[0])):
        seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})), key=int)
        if len(seeds) < 2:
            continue
        d = np.array([by[a][s] - by[b][s] for s in seeds])
        se = d.std(ddof=1) / np.sqrt(len(d))
        signs = (np.array(list(itertools.product((1.0, -1.0), repeat=len(d)))) if len(d) <= 16  # all 2^n
                 else np.random.default_rng(0).choice((1.0, -1.0), (100_000, len(d))))  # or a seeded sample
        p = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-9)
        t = f"{d.mean() / se:+.2f}" if se > 0 else "–"
        lines.append(f"| {label} | {' '.join(seeds)} | {' '.join(f'{v:+.1f}' for v in d)} | {d.mean():+.2f} ± "
                     f"{se:.2f} | {t} | {p:.3f} |")
    return "\n".join(lines)


def effects(paths, column="fd_resized", one_baseline=False):
    """Markdown: each DCGAN switch's main effect (the mean score at plain's value minus at ours'), fitted by least
    squares over every harness DCGAN run in the CSVs (ours, plain, ours+X..., e.g. the --configs factorial runs), one
    table per budget: score = seed's baseline + sum over switches of effect / 2 * (+1 plain's value, -1 ours').
    Each seed is its own block (its own intercept), so a seed shared by a whole replicate cancels out. The standard
    errors come from the residuals (the runs' noise beyond the additive model); none when no degrees of freedom are
    left. The scripts' rows (dcgan.py) are not harness runs and are left out. A switch at one value in every run of
    a budget (e.g. a 2x2 of two switches) is not estimated and is listed as held.

    one_baseline: one intercept for all runs instead of one per seed, and dcgan.py's rows counted as runs of the
    config it is step for step (script_as_config; tests/test_ablation.py). Measured here, runs that share a seed
    are as far apart as runs that do not, so the seed blocks buy nothing; without them every run counts, also a
    seed's lone run."""
    rows = [dict(r, config=script_as_config(r)) if one_baseline and r["config"] == "dcgan.py" else r
            for r in read_rows(paths)]
    rows = [r for r in rows if r.get(column) and r["config"] not in SCRIPTS and not is_wgan_gp(r["config"])]
    column_of = {k: j for j, k in enumerate(SWITCHES)}
    block = (lambda r: "all") if one_baseline else (lambda r: r["seed"])  # noqa: E731 -- the runs' intercepts
    out = []
    for label in sorted({budget(r) for r in rows}, key=budget_order):
        runs = [r for r in rows if budget(r) == label]
        seeds = sorted({block(r) for r in runs})
        coded = np.array([levels(r["config"]) for r in runs], dtype=float)
        varied = [k for k, j in column_of.items() if len(set(coded[:, j])) > 1]
        x = np.array([[float(block(r) == s) for s in seeds] for r in runs], dtype=float)
        x = np.hstack([x, coded[:, [column_of[k] for k in varied]]])
        y = np.array([float(r[column]) for r in runs])
        coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
        dof = len(y) - rank
        blocks = "one baseline" if one_baseline else f"{len(seeds)} seed(s)"
        if rank < x.shape[1]:
            out.append(f"{label}: {len(y)} runs do not separate the {len(varied)} switches they vary and "
                       f"{blocks}; run the whole --configs factorial.\n")
            continue
        sigma2 = np.sum((y - x @ coef) ** 2) / dof if dof else float("nan")
        se = np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * sigma2)
        noise = f"residual sd {np.sqrt(sigma2):.1f} ({dof} dof)" if dof else "no residual left to estimate noise"
        lines = [f"{label}: {len(y)} runs, {blocks}, {noise}", "",
                 "| switch | effect (plain − ours) | standard error | t |", "| --- | ---: | ---: | ---: |"]
        for k in SWITCHES:
            if k not in varied:
                held = "plain's" if coded[0, column_of[k]] > 0 else "ours'"
                lines.append(f"| {k} | held at {held} value | – | – |")
                continue
            i = len(seeds) + varied.index(k)
            cells = f"{2 * se[i]:.1f} | {coef[i] / se[i]:+.2f}" if dof else "– | –"
            lines.append(f"| {k} | {2 * coef[i]:+.1f} | {cells} |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out).rstrip()


def machine():
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name"))
        flags = next(l.split(":", 1)[1].split() for l in lscpu.splitlines() if l.startswith("Flags"))
    except (OSError, StopIteration):
        model, flags = platform.processor(), []
    return f"{model}, {os.cpu_count()} CPUs, " + " ".join(f for f in flags if f.startswith(("avx", "amx")))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["ours", "plain"],
                   help="ours, plain, ours+X, plain+X, ours_wgan_gp(+X), plain_wgan_gp(+X), dcgan.py, wgan_gp.py, "
                        "or factorial (the 16 runs of the DCGAN switches' fractional factorial design)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one run per config and seed")
    p.add_argument("--steps", type=int, default=2000, help="generator steps per run")
    p.add_argument("--eval_every", type=int, default=500, help="score every N generator steps (0: at the end only)")
    p.add_argument("--minutes", type=float, default=0,
                   help="equal time: stop each run after this many minutes of training time (at most --steps) and "
                        "score it there")
    p.add_argument("--eval_samples", type=int, default=10_000, help="generated images per score")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0 = TF's choice)")
    p.add_argument("--csv", default="runs/dcgan_ablation.csv", help="rows are appended here as they come in")
    p.add_argument("--summary", metavar="CSV", nargs="+", help="print the mean +- std table of the CSVs and exit")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="with --summary: config A against config B (difference, Welch t, permutation p); "
                        "configs joined by commas are pooled into one arm")
    p.add_argument("--effects", action="store_true",
                   help="with --summary: each switch's main effect, fitted over the harness's DCGAN runs (the "
                        "--configs factorial design)")
    p.add_argument("--paired", action="store_true",
                   help="with --compare: seed by seed (A's and B's runs of the same seed), for two configs that train "
                        "identically and differ only at sampling (e.g. plain and plain+bn_momentum)")
    p.add_argument("--one_baseline", action="store_true",
                   help="with --effects: one intercept for all runs, not one per seed, and dcgan.py's rows as ours'")
    p.add_argument("--column", default="fd_resized",
                   choices=("fd_resized", "fd_padded", "fd_own", "train_seconds", "step"),
                   help="what --summary tabulates (step: the steps a --minutes run reached)")
    p.add_argument("--geometry", action="store_true", help="print the real-image floor in both geometries and exit")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 configs, 6 steps, 200 samples, 512 images")
    args = p.parse_args(argv)
    if (args.compare or args.effects) and not args.summary:
        raise common.RunError("--compare and --effects need --summary and the CSV files to read.")
    if (args.paired and not args.compare) or (args.one_baseline and not args.effects):
        raise common.RunError("--paired goes with --compare, --one_baseline with --effects.")
    if args.summary:
        if args.effects:
            print(effects(args.summary, args.column, args.one_baseline))
        elif args.compare:
            print((compare_paired if args.paired else compare)(args.summary, *args.compare, args.column))
        else:
            print(summary(args.summary, args.column))
        return
    if "factorial" in args.configs:  # the 16 runs of the design, in place
        args.configs = [c for name in args.configs for c in (FACTORIAL if name == "factorial" else [name])]
    for name in args.configs:
        if name not in SCRIPTS:
            config(name)
    if args.quick and set(args.configs) & set(SCRIPTS):
        raise common.RunError(f"--quick runs the harness's own configs, not the scripts ({', '.join(SCRIPTS)}).")
    if args.eval_every < 0 or args.minutes < 0 or args.steps < 1:
        raise common.RunError("--steps must be positive, --eval_every and --minutes 0 (off) or positive.")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    print(f"machine: {machine()}; TensorFlow {tf.__version__}", file=sys.stderr)
    scorer = Scorer()
    if args.geometry:
        print(geometry_floor(scorer))
        return
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    for seed in args.seeds:
        for name in args.configs:
            if args.quick:
                cfg = config(name)
                runs = train(name, seed, 6, 3, scorer, 200, real_images(cfg["fit"])[:512])
            elif name in SCRIPTS:
                runs = train_script(name, seed, args.steps, args.eval_every, args.threads, scorer, args.eval_samples,
                                    args.minutes)
            else:
                runs = train(name, seed, args.steps, args.eval_every, scorer, args.eval_samples, minutes=args.minutes)
            for row in runs:
                new = not os.path.exists(args.csv)
                # appending to an older CSV keeps its columns (the first ones had no fd_padded, none a budget)
                if new:
                    fields = FIELDS
                else:
                    with open(args.csv, newline="") as f:
                        fields = next(csv.reader(f))
                with open(args.csv, "a", newline="") as f:
                    writer = csv.DictWriter(f, fields, extrasaction="ignore")
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
                print(json.dumps(row), flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    common.cli(main)

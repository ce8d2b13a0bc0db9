"""dcgan.py against a plain TF2/Keras DCGAN, per generator step and per training minute (docs/dcgan_gap.md).

    python experiments/dcgan_gap.py --configs dcgan.py plain --seeds 0 1 2 --steps 2000 --eval_every 500 \
        --threads 1 --csv runs/dcgan_gap.csv                       # equal steps: one run per arm and seed
    python experiments/dcgan_gap.py --configs factorial --seeds 100 --steps 2000 --eval_every 1000 --threads 1 \
        --csv runs/dcgan_gap.csv                                   # all seven switches in 16 runs
    python experiments/dcgan_gap.py --configs dcgan.py plain --seeds 0 1 2 --minutes 5 --steps 100000 \
        --eval_every 0 --threads 1 --design minutes_5 --csv runs/dcgan_gap.csv   # equal time: 5 training minutes
    python experiments/dcgan_gap.py --configs wgan_gp.py plain_wgan_gp --seeds 0 1 2 --steps 500 --eval_every 250 \
        --threads 1 --design wgan_gp_500 --csv runs/dcgan_gap.csv
    python experiments/dcgan_gap.py --summary docs/dcgan_gap.csv --design steps_2000          # mean +- sd per arm
    python experiments/dcgan_gap.py --summary docs/dcgan_gap.csv --design steps_2000 --compare dcgan.py,ours+g_bn0 plain
    python experiments/dcgan_gap.py --summary docs/dcgan_gap.csv --design steps_2000 --effects --one_baseline
    python experiments/dcgan_gap.py --geometry                     # what perfect generators score in each geometry

Arms. "plain" is a plain TF2/Keras DCGAN as a new user writes it (PLAIN TF2/KERAS REFERENCE below: Keras' default
epsilons and momentum, Dense -> BatchNorm -> ReLU on z's projection, Fashion-MNIST padded 28 -> 32, the D step's z
reused for the G step). It differs from dcgan.py in seven switches (SWITCHES). "ours" is the same code with every
switch at the value of `dcgan.py --first_bn channel`; "ours+X" flips switch X to plain's value, "plain+X" flips it
to ours'. dcgan.py with its defaults (`--first_bn feature`, the per-unit first BatchNorm) is "ours+g_bn0", step for
step (tests/test_dcgan_gap.py). "dcgan.py" and "dcgan.py --first_bn channel" run the script itself as a subprocess
(`--batch_size 64`). Every arm is batch 64, z 100-d N(0, I), Adam(2e-4, 0.5, 0.999) and dcgan.py's losses (imported)
on Fashion-MNIST. WGAN-GP: "plain_wgan_gp" is the plain set-up trained by Algorithm 1 as a new user writes it (Keras
LayerNormalization over (H, W, C) in the critic, Adam(1e-4, 0, 0.9) with Keras' epsilon, lambda 10, n_critic 5, a
fresh real batch, z and epsilon per critic update); "ours_wgan_gp" is wgan_gp.py's algorithm in this file (a test
checks it step for step), "wgan_gp.py" the script.

Budgets. --steps N trains N generator steps. --minutes M stops a run after M minutes of *training* time (the step
clock; evaluation and start-up excluded, as the scripts' own --minutes) and scores it there. Run two processes at
most on 2 cores (--threads 1 each), never beside other work.

Scoring. classifier_fd (metrics.py's offline classifier, 10,000 samples in inference mode, noise seed = run seed + 1,
as dcgan.py's --eval_every). The classifier and its statistics are those of data.py's images, resized 28 -> 32. A
padded run's samples are scored twice: `fd_resized` after cropping the 2-pixel frame and resizing 28 -> 32 as data.py
does (the project's geometry, which the page compares), and `fd_padded` against the padded real images; `fd_own` is
the run's own geometry. Rows go to --csv, one per evaluation, with --design naming the set of runs they belong to.
"""
import argparse
import csv
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

# switch: (value of dcgan.py --first_bn channel, the plain implementation's value)
SWITCHES = {
    "fit": ("resize", "pad"),          # 28 -> 32: data.py's bilinear resize, or a 2-pixel border of -1 (black)
    "bn_eps": (1e-5, 1e-3),            # BatchNorm epsilon: PyTorch's and dcgan.torch's, or Keras' default
    "bn_momentum": (0.9, 0.99),        # moving averages (read at sampling only): PyTorch's 0.1, or Keras' default
    "bn_op": ("fused", "keras"),       # ops.BatchNormalization (FusedBatchNormV3, unbiased moving variance) or
                                       # keras.layers.BatchNormalization (composed ops, biased moving variance)
    "g_bn0": ("channel", "feature"),   # G's first BN: after the reshape, per channel (dcgan.torch, pytorch/examples),
                                       # or on the dense output, per unit (Newmu/dcgan_code; dcgan.py's default)
    "adam_eps": (1e-8, 1e-7),          # Adam epsilon: PyTorch's and TF1's, or Keras' default
    "z": ("redraw", "reuse"),          # a fresh z for the G update (Newmu/dcgan_code), or the D update's z again
                                       # (pytorch/examples, dcgan.torch)
}
# WGAN-GP's switches: DCGAN's but z (both programs draw a fresh z per update), and the critic's layer normalisation
WGAN_GP_SWITCHES = {**{k: v for k, v in SWITCHES.items() if k != "z"},
                    "ln": ("tflib", "keras")}  # ops.LayerNorm (a scale per channel, eps 1e-5: the authors' tflib),
                                               # or keras LayerNormalization(axis=[1, 2, 3]) (per element, eps 1e-3)
OURS = {k: v[0] for k, v in SWITCHES.items()}
PLAIN = {k: v[1] for k, v in SWITCHES.items()}
DCGAN_PY = dict(OURS, g_bn0="feature")  # dcgan.py's defaults (--first_bn feature): ours+g_bn0
OURS_WGAN_GP = {k: v[0] for k, v in WGAN_GP_SWITCHES.items()}
PLAIN_WGAN_GP = {k: v[1] for k, v in WGAN_GP_SWITCHES.items()}
SCRIPTS = ("dcgan.py", "wgan_gp.py")  # arms that run the project's script itself
N_CRITIC, GP_WEIGHT = 5, 10.0
BATCH, Z_DIM, SIZE = 64, 100, 32
FIELDS = ("arm", "design", "seed", "step", "budget", "train_seconds", "fd_resized", "fd_own", "fd_padded", *SWITCHES,
          "ln")


def factorial_design():
    """The seven DCGAN switches in 16 runs, a 2^(7-3) fractional factorial of resolution IV: each switch is at
    plain's value in 8 runs and at ours' in 8, every pair of switch columns is orthogonal, and no main effect is
    aliased with a two-switch interaction. 8 runs of a resolution III design (fit, bn_eps, g_bn0 in full;
    z = fit*bn_eps, adam_eps = fit*g_bn0, bn_momentum = bn_eps*g_bn0, bn_op = fit*bn_eps*g_bn0, +1 = plain's value)
    and their fold-over (every switch flipped). It holds both corners, plain (run 7) and ours (run 15)."""
    order = ("fit", "bn_eps", "g_bn0", "z", "adam_eps", "bn_momentum", "bn_op")
    half = [(a, b, c, a * b, a * c, b * c, a * b * c) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]
    return ["+".join(["ours"] + [s for s, v in zip(order, levels) if v > 0])
            for levels in half + [tuple(-v for v in levels) for levels in half]]


FACTORIAL = factorial_design()  # --configs factorial


def config(name):
    """'plain', 'ours', 'ours+X[+Y]', 'plain+X', and the same with 'plain_wgan_gp' / 'ours_wgan_gp' ->
    {switch: value}."""
    base, *flips = name.split("+")
    bases = {"ours": (OURS, SWITCHES), "plain": (PLAIN, SWITCHES), "ours_wgan_gp": (OURS_WGAN_GP, WGAN_GP_SWITCHES),
             "plain_wgan_gp": (PLAIN_WGAN_GP, WGAN_GP_SWITCHES)}
    if base not in bases or any(f not in bases[base][1] for f in flips):
        raise common.RunError(f"unknown arm {name!r}: use ours, plain, ours+X or plain+X with X in "
                              f"{', '.join(SWITCHES)}; ours_wgan_gp(+X), plain_wgan_gp(+X) with X in "
                              f"{', '.join(WGAN_GP_SWITCHES)}; or a script ({', '.join(SCRIPTS)}) and its flags.")
    start, switches = bases[base]
    cfg = dict(start)
    for f in flips:
        cfg[f] = switches[f][1] if base.startswith("ours") else switches[f][0]
    return cfg


def is_script(name):
    return name.split()[0] in SCRIPTS


def is_wgan_gp(name):
    base = name.split("+")[0].split()[0]
    return base == "wgan_gp.py" or base.endswith("wgan_gp")


# ------------------------------------------------------------------ PLAIN TF2/KERAS REFERENCE, with the switches
def batch_norm(cfg):
    layer = ops.BatchNormalization if cfg["bn_op"] == "fused" else keras.layers.BatchNormalization
    return layer(momentum=cfg["bn_momentum"], epsilon=cfg["bn_eps"],
                 gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02))


def plain_generator(cfg, width=64, z_dim=Z_DIM):
    """z [B, 100] -> [B, 32, 32, 1]: Dense 4*4*256 -> BN -> ReLU -> convT 128, 64 (BN, ReLU) -> convT 1, tanh (the
    channels are 4, 2 and 1 times `width`)."""
    init, z = ops.conv_init(), keras.Input((z_dim,))
    x = keras.layers.Dense(4 * 4 * 4 * width, use_bias=False, kernel_initializer=init)(z)
    if cfg["g_bn0"] == "feature":  # BN over the 4096 units, statistics over the batch only
        # as [B, 1, 1, 4096], ops.make_generator's layout, which the fused kernel takes (Keras' BN gives the same
        # bits in either layout)
        x = keras.layers.Reshape((1, 1, 4 * 4 * 4 * width))(x)
        x = keras.layers.Reshape((4, 4, 4 * width))(keras.layers.ReLU()(batch_norm(cfg)(x)))
    else:  # BN over 256 channels, statistics over batch x 4 x 4
        x = keras.layers.ReLU()(batch_norm(cfg)(keras.layers.Reshape((4, 4, 4 * width))(x)))
    for filters in (2 * width, width):
        x = keras.layers.Conv2DTranspose(filters, 4, 2, padding="same", use_bias=False, kernel_initializer=init)(x)
        x = keras.layers.ReLU()(batch_norm(cfg)(x))
    x = keras.layers.Conv2DTranspose(1, 4, 2, padding="same", kernel_initializer=init)(x)
    return keras.Model(z, keras.layers.Activation("tanh")(x), name="plain_generator")


def plain_critic(cfg, layer_norm=False, width=64):
    """[B, 32, 32, 1] -> [B, 1] logits: conv 64 (bias), LReLU -> conv 128, 256 (BN, LReLU) -> Flatten -> Dense 1 (the
    channels are 1, 2 and 4 times `width`). layer_norm: WGAN-GP's critic, layer normalisation (cfg["ln"]) in place
    of BN."""
    init, x_in = ops.conv_init(), keras.Input((SIZE, SIZE, 1))
    x = keras.layers.LeakyReLU(0.2)(keras.layers.Conv2D(width, 4, 2, padding="same", kernel_initializer=init)(x_in))
    for filters in (2 * width, 4 * width):
        x = keras.layers.Conv2D(filters, 4, 2, padding="same", use_bias=False, kernel_initializer=init)(x)
        if not layer_norm:
            norm = batch_norm(cfg)
        elif cfg["ln"] == "tflib":
            norm = ops.LayerNorm()
        else:
            norm = keras.layers.LayerNormalization(axis=[1, 2, 3])
        x = keras.layers.LeakyReLU(0.2)(norm(x))
    x = keras.layers.Dense(1, kernel_initializer=init)(keras.layers.Flatten()(x))
    return keras.Model(x_in, x, name="plain_critic")


def plain_losses(d_real, d_fake):
    """The plain implementation's softplus form: D: mean softplus(-real) + mean softplus(fake); G: softplus(-fake).
    Equal to dcgan.critic_loss / generator_loss (tests/test_dcgan_gap.py), which the train step below uses."""
    return (tf.reduce_mean(tf.nn.softplus(-d_real)) + tf.reduce_mean(tf.nn.softplus(d_fake)),
            tf.reduce_mean(tf.nn.softplus(-d_fake)))


def make_optimizers(cfg, wgan_gp, epsilon=None):
    """(G's Adam, D's Adam): DCGAN's (2e-4, 0.5, 0.999) or WGAN-GP's (1e-4, 0, 0.9), epsilon cfg["adam_eps"] unless
    given."""
    lr, beta_1, beta_2 = (1e-4, 0.0, 0.9) if wgan_gp else (2e-4, 0.5, 0.999)
    eps = cfg["adam_eps"] if epsilon is None else epsilon
    return tuple(keras.optimizers.Adam(lr, beta_1=beta_1, beta_2=beta_2, epsilon=eps) for _ in "gc")


def make_plain_dcgan_step(cfg, generator, critic, g_opt, c_opt, rng):
    """One DCGAN step, compiled: real [B, H, W, C] in [-1, 1] -> (D loss, G loss). cfg["z"]: "reuse" trains G on the
    D step's z, "redraw" draws a fresh one."""
    z_dim = generator.input_shape[-1]

    @tf.function
    def train_step(real):
        z = rng.normal([tf.shape(real)[0], z_dim])
        with tf.GradientTape() as tape:  # (1) D: real and fake as separate calls, as in both programs
            d_real = critic(real, training=True)
            d_fake = critic(generator(z, training=True), training=True)
            d_loss = tf.reduce_mean(dcgan.critic_loss(d_real, d_fake))
        c_opt.apply_gradients(zip(tape.gradient(d_loss, critic.trainable_variables), critic.trainable_variables))
        if cfg["z"] == "redraw":
            z = rng.normal([tf.shape(real)[0], z_dim])
        with tf.GradientTape() as tape:  # (2) G: non-saturating
            g_loss = tf.reduce_mean(dcgan.generator_loss(critic(generator(z, training=True), training=True)))
        g_opt.apply_gradients(zip(tape.gradient(g_loss, generator.trainable_variables),
                                  generator.trainable_variables))
        return d_loss, g_loss
    return train_step


def make_plain_wgan_gp_step(generator, critic, g_opt, c_opt, rng, n_critic=N_CRITIC):
    """One WGAN-GP step (Algorithm 1), compiled: an iterator of real batches -> (critic loss, G loss). n_critic
    updates, each on a fresh real batch with its own z and epsilon, loss D(fake) - D(real) + lambda (||grad D(x_hat)||
    - 1)^2, then one generator update, -D(G(z)). GP_WEIGHT is read when the step is traced."""
    z_dim = generator.input_shape[-1]

    def critic_update(real):
        batch = tf.shape(real)[0]
        fake = generator(rng.normal([batch, z_dim]), training=True)
        eps = rng.uniform([batch, 1, 1, 1])
        with tf.GradientTape() as tape:
            d_real, d_fake = critic(real, training=True), critic(fake, training=True)
            x_hat = eps * real + (1.0 - eps) * fake
            with tf.GradientTape() as inner:
                inner.watch(x_hat)
                d_hat = critic(x_hat, training=True)
            norm = tf.norm(tf.reshape(inner.gradient(d_hat, x_hat), [batch, -1]), axis=1)
            loss = tf.reduce_mean(d_fake) - tf.reduce_mean(d_real) + GP_WEIGHT * tf.reduce_mean(tf.square(norm - 1.0))
        c_opt.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables))
        return loss, batch

    return _plain_wasserstein_step(critic_update, generator, critic, g_opt, rng, n_critic)


def _plain_wasserstein_step(critic_update, generator, critic, g_opt, rng, n_critic):
    """The compiled step both plain Wasserstein GANs share: n_critic critic updates (critic_update(real) -> (loss,
    batch)), each on a fresh real batch, then one generator update, -D(G(z))."""
    z_dim = generator.input_shape[-1]

    @tf.function
    def train_step(iterator):
        for _ in range(n_critic):
            d_loss, batch = critic_update(next(iterator))
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(critic(generator(rng.normal([batch, z_dim]), training=True), training=True))
        g_opt.apply_gradients(zip(tape.gradient(g_loss, generator.trainable_variables),
                                  generator.trainable_variables))
        return d_loss, g_loss
    return train_step


def make_plain_wgan_step(generator, critic, g_opt, c_opt, rng, n_critic=N_CRITIC, clip=0.01):
    """One WGAN step (Algorithm 1, weight clipping), compiled: an iterator of real batches -> (critic loss, G loss).
    n_critic updates of D(fake) - D(real), each followed by clipping every critic weight to [-clip, clip], then one
    generator update, -D(G(z)). The benchmark's plain reference (with two keras.optimizers.RMSprop)."""
    z_dim = generator.input_shape[-1]

    def critic_update(real):
        batch = tf.shape(real)[0]
        fake = generator(rng.normal([batch, z_dim]), training=True)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(critic(fake, training=True)) - tf.reduce_mean(critic(real, training=True))
        c_opt.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables))
        for v in critic.trainable_variables:
            v.assign(tf.clip_by_value(v, -clip, clip))
        return loss, batch

    return _plain_wasserstein_step(critic_update, generator, critic, g_opt, rng, n_critic)


# ------------------------------------------------------------------ data and scoring
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


def geometry_floor(scorer):
    """classifier_fd of 10,000 *real* test images in each geometry against each geometry's training statistics:
    what a perfect generator would score. Then the same images converted as runs are scored (fd_resized, fd_padded):
    padded -> resized (crop, resize) is exact, resized -> padded (shrink, pad) blurs, so fd_padded has a floor above
    zero for a resize-trained run."""
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


# ------------------------------------------------------------------ training
def train(name, seed, steps, eval_every, scorer, eval_samples=10_000, images=None, minutes=0):
    """Yields one row per evaluation of arm `name` trained with `seed`: every `eval_every` steps (0: none) and at
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
        step_fn = make_plain_wgan_gp_step(generator, critic, g_opt, c_opt, rng)
        run_step = lambda: step_fn(batches)  # noqa: E731
    else:
        step_fn = make_plain_dcgan_step(cfg, generator, critic, g_opt, c_opt, rng)
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
            yield dict(arm=name, seed=seed, step=step, train_seconds=round(seconds, 1), fd_own=round(own, 3),
                       fd_resized=round(resized, 3), fd_padded=round(padded, 3), **cfg,
                       budget=f"{minutes:g} min" if seconds >= budget else "")
        if last:
            return


def train_script(name, seed, steps, eval_every, threads, scorer=None, eval_samples=10_000, minutes=0, extra=()):
    """The arm `name` ("dcgan.py", "dcgan.py --first_bn channel", "wgan_gp.py") as a subprocess, --batch_size 64: its
    own --eval_every rows (classifier_fd, noise seed + 1), and with `minutes` its --minutes stop, scored here from
    the run's checkpoint (`scorer`). `extra`: more flags that do not name the arm (e.g. --data_dir)."""
    script, *flags = name.split()
    cfg = OURS_WGAN_GP if script == "wgan_gp.py" else dict(DCGAN_PY, g_bn0=dcgan.parse_args(flags).first_bn)
    with tempfile.TemporaryDirectory() as run_dir:
        env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
        out = os.path.join(run_dir, "run")
        subprocess.run([sys.executable, os.path.join(ROOT, script), *flags, "--batch_size", str(BATCH), "--seed",
                        str(seed), "--steps", str(steps), "--eval_every", str(eval_every), "--log_every",
                        str(eval_every or 100), "--sample_every", str(steps), "--ckpt_every", str(steps),
                        "--minutes", str(minutes), "--out_dir", out, *extra],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        seconds = {r["step"]: round(r["train_seconds"], 1) for r in rows if "train_seconds" in r}
        for row in rows:
            if "eval/classifier_fd" in row and not minutes:
                fd = round(row["eval/classifier_fd"], 3)
                yield dict(arm=name, seed=seed, step=row["step"], train_seconds=seconds.get(row["step"], ""),
                           fd_own=fd, fd_resized=fd, **cfg)
        if minutes:  # the run stopped on its clock with a checkpoint there: score it as train() does
            generator, _, path = common.load_generator(out)
            step = int(path.rsplit("-", 1)[1])
            own, resized, padded = scorer(common.generate_images(generator, eval_samples, Z_DIM, seed + 1), "resize")
            yield dict(arm=name, seed=seed, step=step, train_seconds=seconds.get(step, ""), fd_own=round(own, 3),
                       fd_resized=round(resized, 3), fd_padded=round(padded, 3), **cfg,
                       budget=f"{minutes:g} min" if seconds.get(step, 0) >= minutes * 60 else "")


# ------------------------------------------------------------------ reading the CSV
def read_rows(paths, design=None):
    """Every row of the CSV files, as dicts; with `design`, only the rows of that set of runs."""
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            rows.extend(r for r in csv.DictReader(f) if design is None or r.get("design") == design)
    return rows


def script_as_config(row):
    """A dcgan.py row as the arm of this file that is dcgan.py step for step: ours, with the switches the row records
    at plain's value flipped (ours+g_bn0 for dcgan.py's defaults, ours for --first_bn channel)."""
    return "+".join(["ours", *(k for k in SWITCHES if str(row.get(k)) == str(PLAIN[k]))])


def levels(name):
    """A DCGAN arm's switches coded as in the factorial: +1 at plain's value, -1 at ours'."""
    cfg = config(name)
    return [1 if cfg[k] == PLAIN[k] else -1 for k in SWITCHES]


def budget(row):
    """A CSV row's budget: "step N" (an evaluation at N generator steps) or "M min" (a --minutes stop)."""
    return row.get("budget") or f"step {int(row['step'])}"


def budget_order(b):  # "step N" by N, then "M min" by M
    minutes = b.endswith("min")
    return minutes, float(b.split()[0 if minutes else 1])


def summary(rows, column="fd_resized"):
    """Markdown: mean +- sd (n) of `column` per arm and budget (an evaluated step, or a --minutes stop)."""
    rows = [r for r in rows if r.get(column)]
    budgets = sorted({budget(r) for r in rows}, key=budget_order)
    lines = ["| arm | " + " | ".join(budgets) + " |", "| --- |" + " ---: |" * len(budgets)]
    for name in dict.fromkeys(r["arm"] for r in rows):
        cells = []
        for b in budgets:
            v = np.array([float(r[column]) for r in rows if r["arm"] == name and budget(r) == b])
            cells.append("" if not len(v) else f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f} "
                                               f"({len(v)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(rows, a, b, column="fd_resized", permutations=100_000):
    """Markdown: arm `a` against arm `b` at each budget both reached: the means, the difference a - b with its
    standard error and Welch's t, and a two-sided permutation p-value (the labels shuffled over the pooled runs,
    `permutations` times, seeded): how often a relabelling gives a difference at least as large. `a` or `b` may
    name several arms joined by commas, pooled into one (e.g. "dcgan.py,ours+g_bn0": one algorithm, two programs)."""
    arms = {name: arm for arm in (a, b) for name in arm.split(",")}
    values = {}
    for r in rows:
        if r["arm"] in arms and r.get(column):
            values.setdefault(budget(r), {}).setdefault(arms[r["arm"]], []).append(float(r[column]))
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


def fit_effects(runs, column, block):
    """Least squares over `runs` at one budget: score = block's baseline + sum over the switches the runs vary of
    effect / 2 * (+1 plain's value, -1 ours'). -> {varied, blocks, coef, se, dof, sd, coded}, or None if the runs
    do not separate the unknowns."""
    blocks = sorted({block(r) for r in runs})
    coded = np.array([levels(r["arm"]) for r in runs], dtype=float)
    varied = [k for j, k in enumerate(SWITCHES) if len(set(coded[:, j])) > 1]
    x = np.hstack([np.array([[float(block(r) == s) for s in blocks] for r in runs]),
                   coded[:, [list(SWITCHES).index(k) for k in varied]]])
    y = np.array([float(r[column]) for r in runs])
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    if rank < x.shape[1]:
        return None
    dof = len(y) - rank
    sigma2 = np.sum((y - x @ coef) ** 2) / dof if dof else float("nan")
    se = np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * sigma2)
    return dict(varied=varied, blocks=blocks, coef=coef, se=se, dof=dof, sd=np.sqrt(sigma2), coded=coded)


def effects(rows, column="fd_resized", one_baseline=False):
    """Markdown: each DCGAN switch's main effect (the mean score at plain's value minus at ours'), fitted over every
    DCGAN run of this file in the rows (ours, plain, ours+X..., e.g. the --configs factorial runs), one table per
    budget. Each seed is its own block (its own intercept), so a seed shared by a whole replicate cancels out. The
    standard errors come from the residuals. The scripts' rows are left out. A switch at one value in every run of a
    budget is listed as held.

    one_baseline: one intercept for all runs instead of one per seed, and dcgan.py's rows counted as runs of the arm
    that is dcgan.py step for step (script_as_config). Runs that share a seed are as far apart as runs that do not
    (docs/dcgan_gap.md), so the seed blocks buy nothing; without them every run counts, also a seed's lone run."""
    rows = [dict(r, arm=script_as_config(r)) if one_baseline and r["arm"].split()[0] == "dcgan.py" else r
            for r in rows]
    rows = [r for r in rows if r.get(column) and not is_script(r["arm"]) and not is_wgan_gp(r["arm"])]
    block = (lambda r: "all") if one_baseline else (lambda r: r["seed"])  # noqa: E731 -- the runs' intercepts
    out = []
    for label in sorted({budget(r) for r in rows}, key=budget_order):
        runs = [r for r in rows if budget(r) == label]
        fitted = fit_effects(runs, column, block)
        blocks = "one baseline" if one_baseline else f"{len({block(r) for r in runs})} seed(s)"
        if fitted is None:
            out.append(f"{label}: {len(runs)} runs do not separate the switches they vary and {blocks}; run the "
                       "whole --configs factorial.\n")
            continue
        f = fitted
        noise = f"residual sd {f['sd']:.1f} ({f['dof']} dof)" if f["dof"] else "no residual left to estimate noise"
        lines = [f"{label}: {len(runs)} runs, {blocks}, {noise}", "",
                 "| switch | effect (plain − ours) | standard error | t |", "| --- | ---: | ---: | ---: |"]
        for j, k in enumerate(SWITCHES):
            if k not in f["varied"]:
                held = "plain's" if f["coded"][0, j] > 0 else "ours'"
                lines.append(f"| {k} | held at {held} value | – | – |")
                continue
            i = len(f["blocks"]) + f["varied"].index(k)
            cells = f"{2 * f['se'][i]:.1f} | {f['coef'][i] / f['se'][i]:+.2f}" if f["dof"] else "– | –"
            lines.append(f"| {k} | {2 * f['coef'][i]:+.1f} | {cells} |")
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["dcgan.py", "plain"], metavar="ARM",
                   help="ours, plain, ours+X, plain+X, ours_wgan_gp(+X), plain_wgan_gp(+X), a script with its flags "
                        "(\"dcgan.py\", \"dcgan.py --first_bn channel\", \"wgan_gp.py\"), or factorial (the 16 runs "
                        "of the DCGAN switches' fractional factorial design)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one run per arm and seed")
    p.add_argument("--steps", type=int, default=2000, help="generator steps per run")
    p.add_argument("--eval_every", type=int, default=500, help="score every N generator steps (0: at the end only)")
    p.add_argument("--minutes", type=float, default=0,
                   help="equal time: stop each run after this many minutes of training time (at most --steps) and "
                        "score it there")
    p.add_argument("--eval_samples", type=int, default=10_000, help="generated images per score")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0 = TF's choice)")
    p.add_argument("--csv", default="runs/dcgan_gap.csv", help="rows are appended here as they come in")
    p.add_argument("--design", default="steps_2000",
                   help="the set of runs the rows belong to (a column of the CSV); with --summary, read only its rows")
    p.add_argument("--summary", metavar="CSV", nargs="+", help="print the mean +- sd table of the CSVs and exit")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="with --summary: arm A against arm B (difference, Welch t, permutation p); arms joined by "
                        "commas are pooled into one")
    p.add_argument("--effects", action="store_true",
                   help="with --summary: each switch's main effect, fitted over the DCGAN runs of this file")
    p.add_argument("--one_baseline", action="store_true",
                   help="with --effects: one intercept for all runs, not one per seed, and dcgan.py's rows as the "
                        "arm they are step for step")
    p.add_argument("--column", default="fd_resized",
                   choices=("fd_resized", "fd_padded", "fd_own", "train_seconds", "step"),
                   help="what --summary tabulates (step: the steps a --minutes run reached)")
    p.add_argument("--geometry", action="store_true", help="print the real-image floor in both geometries and exit")
    args = p.parse_args(argv)
    if (args.compare or args.effects) and not args.summary:
        raise common.RunError("--compare and --effects need --summary and the CSV files to read.")
    if args.one_baseline and not args.effects:
        raise common.RunError("--one_baseline goes with --effects.")
    if args.eval_every < 0 or args.minutes < 0 or args.steps < 1:
        raise common.RunError("--steps must be positive, --eval_every and --minutes 0 (off) or positive.")
    if "factorial" in args.configs:  # the 16 runs of the design, in place
        args.configs = [c for name in args.configs for c in (FACTORIAL if name == "factorial" else [name])]
    for name in args.configs:
        if is_script(name):
            if name.split()[0] != "dcgan.py" and len(name.split()) > 1:
                raise common.RunError(f"the arm {name!r}: only dcgan.py takes flags here.")
        else:
            config(name)
    return args


def append_row(path, row):
    """Append one row to the CSV at `path` (with the header if it is new); refuses a CSV of other columns."""
    new = not os.path.exists(path)
    if not new:
        with open(path, newline="") as f:
            if tuple(next(csv.reader(f), ())) != FIELDS:
                raise common.RunError(f"{path} has other columns than this file writes; give a new --csv.")
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def main(argv=None):
    args = parse_args(argv)
    if args.summary:
        rows = read_rows(args.summary, args.design)
        if args.effects:
            print(effects(rows, args.column, args.one_baseline))
        elif args.compare:
            print(compare(rows, *args.compare, args.column))
        else:
            print(summary(rows, args.column))
        return
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
            if is_script(name):
                runs = train_script(name, seed, args.steps, args.eval_every, args.threads, scorer, args.eval_samples,
                                    args.minutes)
            else:
                runs = train(name, seed, args.steps, args.eval_every, scorer, args.eval_samples, minutes=args.minutes)
            for row in runs:
                row["design"] = args.design
                append_row(args.csv, row)
                print(json.dumps(row), flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    common.cli(main)

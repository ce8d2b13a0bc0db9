"""The papers' small experiments, reproduced through the scripts' own algorithm code, one figure per command.

    python experiments/toy.py surfaces     # WGAN-GP Fig. 1a: critic value surfaces, clipping against penalty
    python experiments/toy.py gradients    # WGAN-GP Fig. 1b: gradient norms through a 12-layer critic, weights
    python experiments/toy.py train        # gan_toy.py: the three variants on 8gaussians, 25gaussians, swissroll
    python experiments/toy.py onedim       # WGAN Fig. 2: GAN discriminator against WGAN critic on two 1-D Gaussians
    python experiments/toy.py quality      # WGAN Figs. 3-4: logged loss against classifier_fd (docs/quality.csv)
    python experiments/toy.py all --out_dir docs/papers   # all five (under 10 minutes on 2 CPU cores)
    python experiments/toy.py all --quick  # each in seconds (the tests)

The losses (`critic_loss`, `generator_loss`), `wgan.clip_weights`, `wgan_gp.gradient_penalty` and the optimizers
(`make_optimizers`, from the scripts' own flags) come from dcgan.py, wgan.py and wgan_gp.py; this file sets only
what the authors' toy code (gan_toy.py, Gulrajani et al. 2017) changes: 2-D data, MLPs of 3 x 512 ReLU units
(He init), batch 256, lambda 0.1, Adam beta_1 0.5 for WGAN-GP, no WGAN critic warm-up. DCGAN keeps dcgan.py's
Adam(2e-4, 0.5) and its one discriminator update per generator update. docs/papers.md shows and discusses the
figures.
"""
import argparse
import csv
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up chatter, as in experiments/quality.py
import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import dcgan  # noqa: E402
import files  # noqa: E402
import wgan  # noqa: E402
import wgan_gp  # noqa: E402

# ------------------------------------------------------------------------------ settings (gan_toy.py)
SCRIPTS = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp}
# Each script's own flags, changed only where gan_toy.py differs from the script's default.
TOY_FLAGS = {"dcgan": ["--batch_size", "256"],
             "wgan": ["--batch_size", "256", "--no-critic_warmup"],  # gan_toy.py: 5 critic updates throughout
             "wgan_gp": ["--batch_size", "256", "--gp_weight", "0.1", "--beta1", "0.5"]}  # lambda 0.1: "faster"
DEPTH, RANGE = 4, 3.0  # 3 hidden ReLU layers and a linear output; plots on [-3, 3]^2
# Budgets: `all` fits 10 minutes on 2 shared cores; --quick divides them so that each command takes seconds.
SURFACE_ITERS = 700  # critic updates against the fixed "generator" (gan_toy.py's FIXED_GENERATOR)
GRADIENT_STEPS, DEEP_DEPTH, DEEP_WIDTH = 40, 12, 256  # WGAN-GP paper section 3.2: 12-layer ReLU MLPs
TRAIN_STEPS, MOMENTS = 300, (0.2, 0.5, 1.0)  # generator steps (gan_toy.py: 100,000); snapshots at these shares
ONEDIM_ITERS = 600
QUALITY_KEYS = {"dcgan": "critic_loss", "wgan": "wasserstein", "wgan_gp": "wasserstein"}


# ------------------------------------------------------------------------------------------- the data
def eight_gaussians(n, rng):
    """gan_toy.py: radius 2 on the 8 compass directions, std 0.02, all divided by 1.414."""
    angles = np.pi / 4 * rng.integers(0, 8, n)
    centres = 2 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return ((centres + 0.02 * rng.standard_normal((n, 2))) / 1.414).astype(np.float32)


def twenty_five_gaussians(n, rng):
    """gan_toy.py: a 5 x 5 grid at (2i, 2j), i, j in -2..2, std 0.05, divided by 2.828 (sampled afresh, not
    from a fixed set of 100,000 points)."""
    centres = 2.0 * rng.integers(-2, 3, (n, 2))
    return ((centres + 0.05 * rng.standard_normal((n, 2))) / 2.828).astype(np.float32)


def swiss_roll(n, rng):
    """sklearn's make_swiss_roll(noise=0.25), columns (x, z), divided by 7.5 as in gan_toy.py."""
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], 1) + 0.25 * rng.standard_normal((n, 2))
    return (points / 7.5).astype(np.float32)


def mixture_centres(name):
    """The mode centres and the per-coordinate std of a Gaussian mixture, after gan_toy.py's scaling."""
    if name == "8gaussians":
        a = np.pi / 4 * np.arange(8)
        return 2 * np.stack([np.cos(a), np.sin(a)], 1) / 1.414, 0.02 / 1.414
    grid = np.array([(2.0 * i, 2.0 * j) for i in range(-2, 3) for j in range(-2, 3)])
    return grid / 2.828, 0.05 / 2.828


DATASETS = {"8gaussians": eight_gaussians, "25gaussians": twenty_five_gaussians, "swissroll": swiss_roll}


def mode_metrics(samples, centres, std, fair_share=0.2):
    """Metz et al. 2017 / Srivastava et al. 2017: a sample is high quality within 3 std of its nearest centre.
    Returns (modes with at least one such sample, modes with at least `fair_share` of the samples a uniform
    mixture would give them, share of high-quality samples)."""
    dist = np.linalg.norm(samples[:, None, :] - centres[None, :, :], axis=2)
    nearest, good = dist.argmin(1), dist.min(1) <= 3 * std
    counts = np.bincount(nearest[good], minlength=len(centres))
    return int((counts > 0).sum()), int((counts >= fair_share * len(samples) / len(centres)).sum()), float(good.mean())


# ------------------------------------------------------------------------------------- the variants
def mlp(out_dim, depth=DEPTH, width=512):
    """gan_toy.py's networks: depth - 1 hidden ReLU layers (He-uniform init, as tflib's 'he') and a linear output."""
    layers = [keras.layers.Dense(width, "relu", kernel_initializer="he_uniform") for _ in range(depth - 1)]
    return keras.Sequential(layers + [keras.layers.Dense(out_dim)])


class ToyGAN:
    """One variant on points: the script's losses, constraint and optimizers, the toy networks and data.

    fake(real) replaces the generator when given: gan_toy.py's FIXED_GENERATOR (real + N(0, 1)) or a fixed
    distribution (WGAN Fig. 2); only the critic then trains."""

    def __init__(self, variant, dim=2, depth=DEPTH, width=512, fake=None, flags=(), seed=0, compiled=True):
        self.variant, self.script = variant, SCRIPTS[variant]
        self.args = self.script.parse_args(TOY_FLAGS[variant] + list(flags))
        keras.utils.set_random_seed(seed)
        self.generator, self.critic = mlp(dim, depth, width), mlp(1, depth, width)
        self.generator.build((None, dim)), self.critic.build((None, dim))
        self.g_opt, self.c_opt = self.script.make_optimizers(self.args, self.generator, self.critic)
        self.n_critic = getattr(self.args, "n_critic", 1)  # dcgan.py: one discriminator update per step
        self.dim, self.fixed_fake = dim, fake
        self.step = tf.function(self._step) if compiled else self._step  # eager: no tracing, for --quick

    def fake(self, real):
        if self.fixed_fake is not None:
            return self.fixed_fake(real)
        return self.generator(tf.random.normal(tf.shape(real)))  # z ~ N(0, I): as many dimensions as the data

    def critic_update(self, real):
        fake = self.fake(real)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self.script.critic_loss(self.critic(real), self.critic(fake)))
            if self.script is wgan_gp:  # eps [B, 1] broadcasts over a point as [B, 1, 1, 1] does over an image
                eps = tf.random.uniform([tf.shape(real)[0], 1])
                penalty, _ = wgan_gp.gradient_penalty(self.critic, real, fake, eps)
                loss += self.args.gp_weight * tf.reduce_mean(penalty)
        variables = self.critic.trainable_variables
        self.c_opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        if self.script is wgan:
            wgan.clip_weights(variables, self.args.clip)
        return loss

    def generator_update(self, n):
        with tf.GradientTape() as tape:
            fake = self.generator(tf.random.normal([n, self.dim]))
            loss = tf.reduce_mean(self.script.generator_loss(self.critic(fake)))
        variables = self.generator.trainable_variables
        self.g_opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def _step(self, reals):
        """One generator iteration: reals [n_critic, B, dim], one batch per critic update, then the generator."""
        loss = self.critic_update(reals[0])
        for i in tf.range(1, tf.shape(reals)[0]):  # a graph loop, as in wgan.py: one critic update traced
            loss = self.critic_update(reals[i])
        if self.fixed_fake is None:
            self.generator_update(reals.shape[1])
        return loss

    def train(self, sample, steps, rng, every=None, on_snapshot=None):
        """`steps` generator iterations (critic updates only, when the generator is fixed) on batches of
        sample(n, rng); on_snapshot(step) after the steps listed in `every`."""
        n_critic = self.n_critic if self.fixed_fake is None else 1
        for step in range(1, steps + 1):
            batch = sample(n_critic * self.args.batch_size, rng).reshape(n_critic, self.args.batch_size, -1)
            loss = self.step(tf.constant(batch))
            if on_snapshot and step in (every or ()):
                on_snapshot(step)
        return float(loss)

    def samples(self, n):
        return self.generator(tf.random.normal([n, self.dim])).numpy()

    def wasserstein(self, real):
        """E[D(real)] - E[D(fake)] on one batch: minus the scripts' WGAN critic loss (without the penalty)."""
        return -float(tf.reduce_mean(wgan.critic_loss(self.critic(real), self.critic(self.fake(real)))))


# ------------------------------------------------------------------------------------------- helpers
def activation_grad_norms(layers, inputs, loss_fn):
    """The norm (over the whole batch) of d loss / d h_k for each layer's output h_k, k = 1..len(layers)."""
    with tf.GradientTape() as tape:
        h, outputs = inputs, []
        for layer in layers:
            h = layer(h)
            outputs.append(h)
        loss = loss_fn(h)
    return [float(tf.norm(g)) for g in tape.gradient(loss, outputs)]


def ranks(values):
    """Ranks 1..n, ties sharing their average rank."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")
    r = np.empty(len(values))
    r[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        r[tied] = r[tied].mean()
    return r


def spearman(x, y):
    """Spearman's rank correlation: Pearson's correlation of the (average, for ties) ranks."""
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def grid(n=100, extent=RANGE):
    xs = np.linspace(-extent, extent, n, dtype=np.float32)
    xx, yy = np.meshgrid(xs, xs)
    return xs, np.stack([xx.ravel(), yy.ravel()], 1)


def contour(ax, gan, real, samples=None, extent=RANGE):
    xs, points = grid(extent=extent)
    values = gan.critic(points).numpy().reshape(len(xs), len(xs))
    ax.contourf(xs, xs, values, levels=20, cmap="viridis")
    ax.scatter(real[:, 0], real[:, 1], s=2, c="orange", label="real")
    if samples is not None:
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c="red", label="generated")
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), xticks=[], yticks=[], aspect="equal")


def save(fig, out_dir, name):
    """The figure as a PNG with a 256-colour palette (a third of the bytes, no visible change for these plots),
    written whole or not at all."""
    path, buffer = os.path.join(out_dir, name), io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image, files.atomic_path(path) as tmp:
        image.convert("RGB").quantize(256).save(tmp, format="PNG", optimize=True)
    print(f"wrote {path}")


# ------------------------------------------------------------------------------------------ figures
def surfaces(args, scale):
    """WGAN-GP Fig. 1a: critics trained towards optimality against real + N(0, 1), clipped and penalised."""
    iters = max(1, int(SURFACE_ITERS * scale))
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.4))
    print(f"surfaces: {iters} critic updates each; fake = real + N(0, 1)")
    print(f"{'dataset':12} {'variant':8} {'W estimate':>10} {'mean |grad D| on data':>22} {'at +-c':>7}")
    for col, (name, sample) in enumerate(DATASETS.items()):
        for row, variant in enumerate(("wgan", "wgan_gp")):
            rng = np.random.default_rng(args.seed)
            gan = ToyGAN(variant, width=args.width, fake=lambda real: real + tf.random.normal(tf.shape(real)),
                         seed=args.seed, compiled=not args.quick)
            gan.train(sample, iters, rng)
            real = sample(1000, rng)
            x = tf.constant(real)
            with tf.GradientTape() as tape:
                tape.watch(x)
                d = gan.critic(x)
            slope = float(tf.reduce_mean(tf.norm(tape.gradient(d, x), axis=1)))
            variables = gan.critic.trainable_variables
            at_c = float(wgan.clipped_share(variables, gan.args.clip)) if variant == "wgan" else np.nan
            print(f"{name:12} {variant:8} {gan.wasserstein(x):10.4f} {slope:22.4f} {at_c:7.3f}")
            contour(axes[row, col], gan, real[:300])
            axes[row, col].set_title(f"{name}: {'weight clipping' if variant == 'wgan' else 'gradient penalty'}",
                                     fontsize=9)
    fig.suptitle("Critic value surfaces against a fixed generator (real + N(0, 1)); WGAN-GP paper Fig. 1a", fontsize=10)
    fig.tight_layout(h_pad=1.5)  # the square panels otherwise meet the next row's titles
    save(fig, args.out_dir, "surfaces.png")


def gradients(args, scale):
    """WGAN-GP Fig. 1b: gradient norms through a deep critic, and its weights, under clipping and the penalty."""
    steps = max(1, int(GRADIENT_STEPS * scale))
    runs = [("wgan", c) for c in (0.1, 0.01, 0.001)] + [("wgan_gp", None)]
    fig, (ax_norm, ax_clip, ax_gp) = plt.subplots(1, 3, figsize=(12, 3.6))
    print(f"gradients: swissroll, {DEEP_DEPTH}-layer ReLU MLPs of {args.deep_width}, {steps} generator steps each")
    for variant, c in runs:
        rng = np.random.default_rng(args.seed)
        flags = (["--clip", str(c)] if c else []) + args.quick_flags
        gan = ToyGAN(variant, depth=DEEP_DEPTH, width=args.deep_width, flags=flags, seed=args.seed,
                     compiled=not args.quick)
        gan.train(swiss_roll, steps, rng)
        real = tf.constant(swiss_roll(gan.args.batch_size, rng))
        both = tf.concat([real, gan.fake(real)], 0)
        b = gan.args.batch_size
        norms = activation_grad_norms(gan.critic.layers, both,
                                      lambda d: tf.reduce_mean(gan.script.critic_loss(d[:b], d[b:])))
        label = f"weight clipping c = {c}" if c else "gradient penalty"
        ax_norm.semilogy(range(1, len(norms) + 1), norms, "o-", label=label)
        print(f"{label:26} grad norm, layer 1..{len(norms)}: " + " ".join(f"{v:.1e}" for v in norms))
        weights = np.concatenate([v.numpy().ravel() for v in gan.critic.trainable_variables if "kernel" in v.path])
        if c == 0.01:
            ax_clip.hist(weights, bins=60)
            ax_clip.set_title(f"critic weights, clipping c = {c}", fontsize=9)
            print(f"  share of weights at +-c: {np.mean(np.abs(weights) >= c * (1 - 1e-6)):.3f}")
        if c is None:  # the middle 99%: the first layer's few weights (fan-in 2) reach +-1.7 at He init
            ax_gp.hist(weights, bins=60, range=tuple(np.percentile(weights, [0.5, 99.5])))
            ax_gp.set_title("critic weights, gradient penalty", fontsize=9)
            print(f"  weights: std {weights.std():.4f}, |w| > 0.01: {np.mean(np.abs(weights) > 0.01):.3f}")
    ax_norm.set(xlabel="critic layer (output of)", ylabel="norm of d critic loss / d activations",
                title="gradient norm by layer (log scale)")
    ax_norm.legend(fontsize=8)
    fig.suptitle("Deep critics on swissroll; WGAN-GP paper Fig. 1b", fontsize=10)
    fig.tight_layout()
    save(fig, args.out_dir, "gradients.png")


def train(args, scale):
    """gan_toy.py: the three variants on the three datasets, samples and critic contours during training."""
    steps = max(2, int(args.train_steps * scale))
    moments = sorted({max(1, int(m * steps)) for m in MOMENTS})
    fig, axes = plt.subplots(9, len(moments), figsize=(2.6 * len(moments), 23.4), squeeze=False)
    table = []
    print(f"train: {steps} generator steps each, snapshots at {moments}")
    for d, (name, sample) in enumerate(DATASETS.items()):
        for v, variant in enumerate(SCRIPTS):
            rng = np.random.default_rng(args.seed)
            flags = args.quick_flags if variant != "dcgan" else []
            gan = ToyGAN(variant, width=args.width, flags=flags, seed=args.seed, compiled=not args.quick)
            row, real = 3 * d + v, sample(500, np.random.default_rng(args.seed + 1))
            start = time.time()

            def snapshot(step):
                col = moments.index(step)
                contour(axes[row, col], gan, real, gan.samples(500))
                axes[row, col].set_title(f"{name}, {variant}, step {step}", fontsize=9)

            gan.train(sample, steps, rng, moments, snapshot)
            if name != "swissroll":
                centres, std = mixture_centres(name)
                modes, fair, good = mode_metrics(gan.samples(2500), centres, std)
                table.append((name, variant, modes, len(centres), fair, good, time.time() - start))
    print(f"{'dataset':12} {'variant':8} {'modes (>=1 sample)':>19} {'modes (>=20% share)':>20} "
          f"{'high quality':>12} {'seconds':>8}")
    for name, variant, modes, k, fair, good, secs in table:
        print(f"{name:12} {variant:8} {f'{modes}/{k}':>19} {f'{fair}/{k}':>20} {good:12.3f} {secs:8.1f}")
    fig.suptitle("Samples (red), data (orange), critic values (contours)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    save(fig, args.out_dir, "train.png")


def onedim(args, scale):
    """WGAN Fig. 2: the GAN discriminator saturates away from the data, the WGAN critic stays close to linear."""
    iters = max(1, int(ONEDIM_ITERS * scale))
    real_mean, fake_mean, std = -2.0, 2.0, 0.5

    def sample(n, rng):
        return (real_mean + std * rng.standard_normal((n, 1))).astype(np.float32)

    x = tf.constant(np.linspace(-6, 6, 400, dtype=np.float32)[:, None])
    fig, (ax_value, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.6))
    xs = x.numpy().ravel()
    density = np.exp(-0.5 * ((xs[:, None] - [real_mean, fake_mean]) / std) ** 2) / (std * np.sqrt(2 * np.pi))
    ax_value.fill_between(xs, density[:, 0], alpha=0.3, label="real density")
    ax_value.fill_between(xs, density[:, 1], alpha=0.3, label="fake density")
    print(f"onedim: real N({real_mean}, {std}^2), fake N({fake_mean}, {std}^2), {iters} updates each")
    for variant, label in (("dcgan", "GAN discriminator D(x) = sigmoid(logit)"),
                           ("wgan", "WGAN critic (rescaled to [0, 1])")):
        gan = ToyGAN(variant, dim=1, width=args.width,
                     fake=lambda real: fake_mean + std * tf.random.normal(tf.shape(real)),
                     seed=args.seed, compiled=not args.quick)
        gan.train(sample, iters, np.random.default_rng(args.seed))
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = gan.critic(x)
            if variant == "dcgan":
                value = tf.sigmoid(value)
        grad = np.abs(tape.gradient(value, x).numpy().ravel())
        value = value.numpy().ravel()
        shown = value if variant == "dcgan" else (value - value.min()) / (value.max() - value.min())
        ax_value.plot(xs, shown, label=label)
        ax_grad.semilogy(xs, grad / grad.max(), label=f"|d/dx| of the {label.split(' (')[0].split(' D(')[0]}")
        at_fake = grad[np.abs(xs - fake_mean) < std].mean() / grad.max()
        print(f"{variant:6} |gradient| near the fake mode / its maximum: {at_fake:.2e}; "
              f"min/max over [-6, 6]: {grad.min() / grad.max():.2e}")
    ax_value.set(xlabel="x", title="values")
    ax_value.legend(fontsize=7, loc="center left")
    ax_grad.set(xlabel="x", title="|gradient w.r.t. x| / its maximum (log scale)")
    ax_grad.legend(fontsize=7)
    fig.suptitle("Two 1-D Gaussians: GAN discriminator against WGAN critic; WGAN paper Fig. 2", fontsize=10)
    fig.tight_layout()
    save(fig, args.out_dir, "onedim.png")


def quality(args, scale=1.0):
    """WGAN Figs. 3-4: does the logged loss track sample quality? experiments/quality.py's CSV, one panel each."""
    rows = []
    for path in args.csv:
        if not os.path.isfile(path):
            raise SystemExit(f"error: {path} is not a file; give a quality.csv written by experiments/quality.py.")
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    print(f"quality: {len(rows)} rows from {', '.join(args.csv)}")
    for ax, (variant, key) in zip(axes, QUALITY_KEYS.items()):
        points = [r for r in rows if r["variant"] == variant and r.get(key) and r.get("classifier_fd")]
        for run in sorted({r["run"] for r in points}):
            mine = [r for r in points if r["run"] == run]
            x, y = [float(r[key]) for r in mine], [float(r["classifier_fd"]) for r in mine]
            ax.plot(x, y, "o-", ms=4, lw=0.6, label=f"{run}: rho {spearman(x, y):+.2f}" if len(x) > 2 else run)
        x = [float(r[key]) for r in points]
        y = [float(r["classifier_fd"]) for r in points]
        rho = spearman(x, y) if len(x) > 2 else float("nan")
        print(f"{variant:8} {key:12} vs classifier_fd: Spearman rho {rho:+.3f} over {len(x)} points")
        what = "Wasserstein estimate" if key == "wasserstein" else "discriminator loss"
        ax.set(xlabel=f"logged {what} ({key})", ylabel="classifier_fd (lower is better)",
               title=f"{variant}: Spearman rho {rho:+.2f} (n = {len(x)})")
        ax.legend(fontsize=7)
    fig.suptitle("Does the logged loss track sample quality? (WGAN paper Figs. 3-4)", fontsize=10)
    fig.tight_layout()
    save(fig, args.out_dir, "quality.png")


COMMANDS = {"surfaces": surfaces, "gradients": gradients, "train": train, "onedim": onedim, "quality": quality}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("command", choices=list(COMMANDS) + ["all"], help="the figure to make, or all of them")
    parser.add_argument("--out_dir", default="runs/toy", help="where the PNG figures go")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: seconds per command (for the tests)")
    parser.add_argument("--width", type=int, default=512,
                        help="units per hidden layer of the 4-layer MLPs (gan_toy.py's 512; `all` took 6.6 minutes "
                             "on 2 quiet CPU cores; 256 is about twice as fast)")
    parser.add_argument("--train_steps", type=int, default=TRAIN_STEPS,
                        help="train: generator steps per run (gan_toy.py: 100,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the data")
    parser.add_argument("--csv", nargs="+", help="quality: experiments/quality.py CSVs (every run of docs/quality.md)",
                        default=[os.path.join(ROOT, "docs", "quality.csv")])
    args = parser.parse_args(argv)
    args.deep_width, args.quick_flags, scale = DEEP_WIDTH, [], 1.0
    if args.quick:  # eager, small networks, one critic update per step, a few steps: seconds, not minutes
        args.width, args.deep_width, args.quick_flags, scale = 32, 32, ["--n_critic", "1"], 0.004
    tf.get_logger().setLevel("ERROR")  # each run is a new network, traced once: TF's retracing warning is noise
    os.makedirs(args.out_dir, exist_ok=True)
    for name in COMMANDS if args.command == "all" else [args.command]:
        start = time.time()
        COMMANDS[name](args, scale)
        print(f"{name}: {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()

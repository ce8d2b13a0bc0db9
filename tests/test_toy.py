"""experiments/toy.py: the toy datasets, the mode metrics, the per-layer gradient norms, Spearman's rho, every
figure in --quick mode, and that the toy runs train through the scripts' own losses and constraints."""
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import dcgan  # noqa: E402
import toy  # noqa: E402
import wgan  # noqa: E402
import wgan_gp  # noqa: E402


def nearest(points, centres):
    dist = np.linalg.norm(points[:, None] - centres[None], axis=2)
    return dist.argmin(1), points - centres[dist.argmin(1)]


@pytest.mark.parametrize("name, n_modes, radius, std", [("8gaussians", 8, 2 / 1.414, 0.02 / 1.414),
                                                        ("25gaussians", 25, 4 * np.sqrt(2) / 2.828, 0.05 / 2.828)])
def test_mixtures_have_gan_toys_centres_scale_and_std(name, n_modes, radius, std):
    centres, centre_std = toy.mixture_centres(name)
    assert len(centres) == n_modes and centre_std == pytest.approx(std)
    assert np.linalg.norm(centres, axis=1).max() == pytest.approx(radius, rel=1e-3)  # the outermost centre
    points = toy.DATASETS[name](40000, np.random.default_rng(0))
    assert points.shape == (40000, 2) and points.dtype == np.float32
    which, offset = nearest(points, centres)
    assert offset.std(0) == pytest.approx([std, std], rel=0.03)  # per coordinate, around each centre
    assert np.abs(offset.mean(0)).max() < 0.1 * std
    share = np.bincount(which, minlength=n_modes) / len(points)
    assert np.abs(share - 1 / n_modes).max() < 0.15 / n_modes  # every mode equally likely


def test_swiss_roll_follows_sklearns_formula_and_scale():
    points = toy.swiss_roll(40000, np.random.default_rng(0)) * 7.5
    radius = np.linalg.norm(points, axis=1)
    # The noise-free roll (t cos t, t sin t) has angle t (mod 2 pi) and radius t: of the turns t = angle + 2 pi k,
    # the one nearest the radius is the point's own (turns are 2 pi apart, the noise 0.25).
    angle = np.arctan2(points[:, 1], points[:, 0])
    t = angle + 2 * np.pi * np.round((radius - angle) / (2 * np.pi))
    assert t.min() > 1.5 * np.pi - 1 and t.max() < 4.5 * np.pi + 1  # t = 1.5 pi (1 + 2u), u ~ U[0, 1]
    assert np.histogram(t, bins=4, range=(1.5 * np.pi, 4.5 * np.pi))[0] / len(t) == pytest.approx([0.25] * 4, abs=0.02)
    assert (radius - t).std() == pytest.approx(0.25, rel=0.1)  # N(0, 0.25^2) per coordinate: its radial part
    # /7.5 is gan_toy.py's "stdev plus a little": the roll's std per coordinate by quadrature over t, plus the noise.
    grid = np.linspace(1.5 * np.pi, 4.5 * np.pi, 100001)
    std = [np.sqrt(np.var(grid * f(grid)) + 0.25 ** 2) / 7.5 for f in (np.cos, np.sin)]
    assert points.std(0) / 7.5 == pytest.approx(std, rel=0.02)
    assert points.mean(0) == pytest.approx([np.mean(grid * np.cos(grid)), np.mean(grid * np.sin(grid))], abs=0.15)


def test_mode_metrics_on_hand_made_samples():
    centres, std = toy.mixture_centres("8gaussians")
    assert toy.mode_metrics(np.repeat(centres, 10, 0), centres, std) == (8, 8, 1.0)  # every mode
    one = centres[[3]] + [[2.9 * std, 0.0]]  # inside 3 std of mode 3
    assert toy.mode_metrics(np.repeat(one, 80, 0), centres, std) == (1, 1, 1.0)  # one mode, all high quality
    off = np.zeros((80, 2)) + centres[[3]] * 0.5  # half-way to the origin: off every mode
    assert toy.mode_metrics(off, centres, std) == (0, 0, 0.0)
    just_out = centres[[3]] + [[0.0, 3.1 * std]]
    half = np.concatenate([np.repeat(one, 40, 0), np.repeat(just_out, 40, 0)])
    assert toy.mode_metrics(half, centres, std) == (1, 1, 0.5)
    # One sample on each of two modes among 80: covered, but below 20% of a fair share (80 / 8 = 10 samples).
    few = np.concatenate([centres[[0, 1]], off[:78]])
    assert toy.mode_metrics(few, centres, std) == (2, 0, 2 / 80)


def test_activation_grad_norms_by_hand():
    # h1 = x (identity), h2 = relu(h1), h3 = h2 . (2, 5); loss = sum over the batch of h3.
    layers = [keras.layers.Dense(2, use_bias=False, kernel_initializer="identity"),
              keras.layers.Dense(2, "relu", use_bias=False, kernel_initializer="identity"),
              keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant([[2.0], [5.0]]))]
    batch = 4
    x = tf.constant([[1.0, -1.0]] * batch)
    norms = toy.activation_grad_norms(layers, x, tf.reduce_sum)
    # d loss/d h3 = 1 per sample; d/d h2 = (2, 5); d/d h1 = (2, 5) * relu'(1, -1) = (2, 0). Norms over the batch.
    assert norms == pytest.approx([2 * np.sqrt(batch), np.sqrt(29 * batch), np.sqrt(batch)], rel=1e-6)


def test_spearman_against_hand_ranks_with_ties():
    assert list(toy.ranks([3, 1, 3, 2])) == [3.5, 1, 3.5, 2]
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): covariance 4.5, variances 4.5 and 5.
    assert toy.spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert toy.spearman([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)  # monotone, not linear
    assert toy.spearman([1, 2, 3, 4], [5, 4, 3, -9]) == pytest.approx(-1.0)


def final_weights(variant, steps=1):
    flags = [] if variant == "dcgan" else ["--n_critic", "1"]  # the scripts' own flag: one critic update, for time
    gan = toy.ToyGAN(variant, width=16, flags=flags, seed=3, compiled=False)
    gan.train(toy.eight_gaussians, steps, np.random.default_rng(0))
    return np.concatenate([v.numpy().ravel() for v in gan.critic.weights + gan.generator.weights])


@pytest.mark.parametrize("script, name, replacement", [
    (wgan, "critic_loss", lambda d_real, d_fake: tf.reshape(d_real - d_fake, [-1])),  # the sign flipped
    (wgan, "clip_weights", lambda variables, c: None),  # no clipping
    (wgan_gp, "gradient_penalty", lambda critic, real, fake, eps: (tf.zeros([tf.shape(real)[0]]), None)),
    (dcgan, "generator_loss", lambda d_fake: -dcgan.critic_loss(d_fake, d_fake)),
])
def test_toy_runs_train_through_the_scripts_code(monkeypatch, script, name, replacement):
    variant = script.__name__
    before = final_weights(variant)
    np.testing.assert_array_equal(before, final_weights(variant))  # reproducible, so a change below is the patch's
    monkeypatch.setattr(script, name, replacement)
    assert np.abs(final_weights(variant) - before).max() > 1e-6


def test_toy_settings_are_the_scripts_flags_changed_as_in_gan_toy():
    gp = toy.ToyGAN("wgan_gp", width=8, compiled=False)
    assert (gp.args.batch_size, gp.args.gp_weight, gp.args.beta1, gp.args.beta2, gp.args.lr, gp.n_critic) == \
        (256, 0.1, 0.5, 0.9, 1e-4, 5)
    clip = toy.ToyGAN("wgan", width=8, compiled=False)
    assert (clip.args.lr, clip.args.clip, clip.n_critic, clip.args.critic_warmup) == (5e-5, 0.01, 5, False)
    assert isinstance(clip.c_opt, wgan.ops.RMSprop) and clip.c_opt is not clip.g_opt
    gan = toy.ToyGAN("dcgan", width=8, compiled=False)
    assert (gan.args.lr, gan.args.beta1, gan.n_critic) == (2e-4, 0.5, 1)


@pytest.mark.parametrize("command", [
    "surfaces", "onedim", "quality",
    pytest.param("gradients", marks=pytest.mark.slow),  # four 12-layer critics: ~15 s on 2 cores
    pytest.param("train", marks=pytest.mark.slow),  # nine runs and a 27-panel figure: ~30 s
])
def test_every_figure_in_quick_mode(tmp_path, capsys, command):
    toy.main([command, "--quick", "--out_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert os.listdir(tmp_path) == [f"{command}.png"] and os.path.getsize(tmp_path / f"{command}.png") > 10000
    expected = {"surfaces": "swissroll    wgan_gp", "onedim": "near the fake mode", "quality": "Spearman rho",
                "gradients": "grad norm, layer 1..12", "train": "25gaussians  wgan_gp"}
    assert expected[command] in out


def test_quality_names_a_missing_csv(tmp_path):
    with pytest.raises(SystemExit, match="is not a file"):
        toy.main(["quality", "--csv", str(tmp_path / "none.csv"), "--out_dir", str(tmp_path)])


def test_quality_reads_every_run_of_docs_quality_csv(tmp_path, capsys):
    """The default CSV holds all runs of docs/quality.md (both DCGAN batches, three seeds of WGAN and WGAN-GP), so
    the figure's correlations are those docs/papers.md quotes."""
    toy.main(["quality", "--out_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "quality: 81 rows from " in out
    for line in ("dcgan    critic_loss  vs classifier_fd: Spearman rho -0.117 over 21 points",
                 "wgan     wasserstein  vs classifier_fd: Spearman rho +0.771 over 30 points",
                 "wgan_gp  wasserstein  vs classifier_fd: Spearman rho +0.941 over 30 points"):
        assert line in out

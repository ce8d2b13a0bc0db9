"""The three training scripts: hand-computed losses, penalty and clipping, the train step, end-to-end runs, resume."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import common
import devices
import training
import dcgan
import ops
import sample
import wgan
import wgan_gp

from conftest import ROOT, cli_in_process

SCRIPTS = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp}
# A small, fast configuration: 28x28 (two up/down-sampling layers) and narrow networks.
TINY = ["--image_size", "28", "--width", "8", "--batch_size", "16", "--z_dim", "16", "--log_every", "1"]


# --------------------------------------------------------------------------------------------------- losses
def test_dcgan_losses_by_hand():
    # Logit 0 is D = 0.5: each BCE term is log 2. Logits +-log(3) are D = 3/4 and 1/4.
    assert np.allclose(dcgan.critic_loss(tf.zeros([4, 1]), tf.zeros([4, 1])), 2 * np.log(2))
    assert np.allclose(dcgan.generator_loss(tf.zeros([4, 1])), np.log(2))
    d_real, d_fake = tf.fill([2, 1], np.log(3.0)), tf.fill([2, 1], -np.log(3.0))
    assert np.allclose(dcgan.critic_loss(d_real, d_fake), -2 * np.log(0.75))
    assert np.allclose(dcgan.generator_loss(d_fake), -np.log(0.25))  # non-saturating: -log D(G(z))
    # From logits, stable where log(sigmoid(x)) by hand would give inf: logit -200 means -log D = 200.
    assert np.allclose(dcgan.generator_loss(tf.constant([[-200.0]])), 200.0)
    assert np.isfinite(dcgan.critic_loss(tf.constant([[-200.0]]), tf.constant([[200.0]]))).all()


@pytest.mark.parametrize("module", [wgan, wgan_gp])
def test_wasserstein_losses_by_hand(module):
    d_real, d_fake = tf.constant([[3.0], [1.0]]), tf.constant([[0.5], [-1.5]])
    # The critic minimises E[D(fake)] - E[D(real)] = -0.5 - 2 = -2.5, i.e. maximises the estimate 2.5;
    # the generator minimises -E[D(fake)] = 0.5.
    assert np.isclose(tf.reduce_mean(module.critic_loss(d_real, d_fake)), -2.5)
    assert np.isclose(tf.reduce_mean(module.generator_loss(d_fake)), 0.5)


def linear_critic(x, training=True):
    return 2.0 * tf.reduce_sum(x, axis=[1, 2, 3])  # gradient 2 everywhere: norm 2 * sqrt(#pixels)


def test_gradient_penalty_of_linear_critic():
    # 4 values per sample ([2, 2, 1] image): ||grad|| = 2 * sqrt(4) = 4, penalty (4 - 1)^2 = 9 for any epsilon.
    real, fake = tf.random.normal([5, 2, 2, 1]), tf.random.normal([5, 2, 2, 1])
    for eps in (tf.zeros([5, 1, 1, 1]), tf.ones([5, 1, 1, 1]), tf.random.uniform([5, 1, 1, 1])):
        penalty, norm = wgan_gp.gradient_penalty(linear_critic, real, fake, eps)
        assert np.allclose(norm, 4.0) and np.allclose(penalty, 9.0)
    penalty, _ = wgan_gp.gradient_penalty(linear_critic, real, fake, eps, target=2.0)
    assert np.allclose(penalty, 1.0)


def test_gradient_norm_runs_over_all_axes():
    # A critic whose gradient differs along H, W and C: the norm must include every entry. Summing over one
    # axis only (the classic bug) would give a [B, W, C] result or another value.
    weights = tf.reshape(tf.range(1.0, 13.0), [1, 2, 3, 2])
    critic = lambda x, training=True: tf.reduce_sum(weights * x, axis=[1, 2, 3])
    x = tf.zeros([3, 2, 3, 2])
    penalty, norm = wgan_gp.gradient_penalty(critic, x, x, tf.fill([3, 1, 1, 1], 0.5))
    expected = np.sqrt(np.sum(np.arange(1.0, 13.0) ** 2))
    assert norm.shape == (3,) and np.allclose(norm, expected) and np.allclose(penalty, (expected - 1) ** 2)


def test_gradient_penalty_is_finite_at_zero_gradient():
    critic = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(1, "relu")])
    critic.layers[-1].bias.assign([-100.0])  # relu is flat here: the gradient is exactly zero
    x = tf.random.normal([2, 2, 2, 1])
    with tf.GradientTape() as tape:
        penalty, _ = wgan_gp.gradient_penalty(critic, x, x, tf.fill([2, 1, 1, 1], 0.5))
    grads = tape.gradient(penalty, critic.trainable_variables)
    assert np.allclose(penalty, 1.0) and all(np.isfinite(g).all() for g in grads if g is not None)


def test_interpolation_eps_is_uniform_per_sample():
    eps = wgan_gp.interpolation_eps(tf.random.Generator.from_seed(1), 20000)
    values = eps.numpy().ravel()
    assert eps.shape == (20000, 1, 1, 1)
    assert values.min() >= 0.0 and values.max() <= 1.0
    # U[0, 1]: mean 1/2, variance 1/12, and each tenth of the interval holds a tenth of the draws (a normal
    # epsilon would have negative values and 68% of its mass in [-1, 1]).
    assert abs(values.mean() - 0.5) < 0.01 and abs(values.var() - 1 / 12) < 0.003
    assert np.allclose(np.histogram(values, bins=10, range=(0, 1))[0] / values.size, 0.1, atol=0.01)
    assert len(np.unique(values)) > 0.99 * values.size  # one per sample, not one per batch (float32 may repeat)


# ------------------------------------------------------------------------------------------------ networks
def test_clip_weights_covers_every_critic_variable_and_no_generator_variable():
    assert np.isclose(tf.clip_by_value(2.0, -0.1, 0.1), 0.1)  # the hand value: clip(2.0, c = 0.1) = 0.1
    critic = ops.make_critic(28, 1, width=8, norm="batch")
    generator = ops.make_generator(28, 1, z_dim=4, width=8)
    for v in critic.trainable_variables + generator.trainable_variables:
        v.assign(tf.fill(v.shape, 2.0))
    moving = list(critic.non_trainable_variables)
    wgan.clip_weights(critic.trainable_variables, 0.1)
    names = [v.path for v in critic.trainable_variables]
    assert any("batch_normalization" in n and "gamma" in n for n in names)  # BN parameters are included
    assert any("bias" in n for n in names)
    for v in critic.trainable_variables:
        assert np.allclose(v.numpy(), 0.1), v.path
    for v in generator.trainable_variables:
        assert np.allclose(v.numpy(), 2.0), v.path
    assert float(wgan.clipped_share(critic.trainable_variables, 0.1)) == 1.0
    assert moving and all(not np.allclose(v.numpy(), 0.1) for v in moving)  # statistics are not parameters


def test_critic_warmup_schedule():
    iters = [wgan.critic_iters(s, 5, True) for s in range(1001)]
    assert iters[:25] == [100] * 25 and iters[25:500] == [5] * 475 and iters[500] == 100 and iters[1000] == 100
    assert iters[501] == 5 and sum(i == 100 for i in iters) == 27
    assert all(wgan.critic_iters(s, 5, False) == 5 for s in range(1001))


@pytest.mark.parametrize("size", [28, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_networks_scale_with_image_size(size, channels):
    generator = ops.make_generator(size, channels, z_dim=8, width=4)
    critic = ops.make_critic(size, channels, width=4, norm="layer")
    images = generator(tf.random.normal([2, 8]))
    assert images.shape == (2, size, size, channels) and images.dtype == tf.float32
    assert np.abs(images.numpy()).max() <= 1.0
    assert critic(images).shape == (2, 1)


def test_wgan_gp_critic_has_no_batchnorm():
    args = wgan_gp.parse_args([])
    assert args.norm == "layer"
    critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in critic.layers)
    assert any(isinstance(layer, ops.LayerNorm) for layer in critic.layers)
    with pytest.raises(SystemExit):  # the flag does not even offer it
        wgan_gp.parse_args(["--norm", "batch"])
    # Each sample's score depends on that sample alone, which the per-sample penalty needs.
    x = tf.random.normal([4, 32, 32, 1])
    assert np.allclose(critic(x)[:1], critic(x[:1]), atol=1e-5)


def test_layer_norm_normalises_each_sample_over_h_w_c():
    x = tf.random.normal([3, 4, 4, 5]) * 7 + 3
    layer = ops.LayerNorm()
    y = layer(x).numpy()
    assert np.allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-5) and np.allclose(y.std(axis=(1, 2, 3)), 1, atol=1e-3)
    # With a scale and offset per channel: tflib's formula, (x - mean) / sqrt(var + eps) * gamma + beta, in numpy.
    gamma, beta = np.linspace(0.5, 2, 5, dtype=np.float32), np.linspace(-1, 1, 5, dtype=np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    xs = x.numpy().astype(np.float64)
    mean, var = xs.mean(axis=(1, 2, 3), keepdims=True), xs.var(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(layer(x).numpy(), (xs - mean) / np.sqrt(var + 1e-5) * gamma + beta, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_is_keras_batch_norm_with_pytorchs_moving_variance(dtype):
    # ops.BatchNormalization trains through TF's fused kernel: the same outputs and gradients as Keras' layer, the
    # same moving mean, and the moving variance updated with the unbiased batch variance, as PyTorch's BatchNorm.
    x = tf.random.stateless_normal([8, 4, 4, 3], seed=[1, 2]) * 2 + 1
    results = {}
    for cls in (ops.BatchNormalization, keras.layers.BatchNormalization):
        layer = cls(momentum=0.9, epsilon=1e-5, dtype=dtype,
                    gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02, seed=1))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2 * tf.sin(x))
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results[cls] = [t.numpy().astype(np.float32) for t in (y, *grads, layer.moving_mean, layer.moving_variance,
                                                               layer(x, training=False))]
    ours, keras_ = results.values()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=2e-2, atol=2e-2)
    n = 8 * 4 * 4
    compute_dtype = keras.DTypePolicy(dtype).compute_dtype  # the layers see x rounded to it
    batch_var = np.var(tf.cast(tf.cast(x, compute_dtype), tf.float32).numpy().reshape(n, 3), axis=0)
    np.testing.assert_allclose(ours[5], 0.9 + 0.1 * batch_var * n / (n - 1), rtol=1e-5)  # from 1, momentum 0.9
    np.testing.assert_allclose(keras_[5], 0.9 + 0.1 * batch_var, rtol=1e-5)
    for name, a, b in zip(["output", "dx", "dgamma", "dbeta", "moving mean"], ours, keras_):
        np.testing.assert_allclose(a, b, **tol, err_msg=name)
    # Inference uses the moving statistics in both (Keras' own computation).
    np.testing.assert_allclose(ours[6], keras_[6], rtol=1e-2, atol=1e-2)


def test_defaults_are_the_papers():
    d, w, gp = dcgan.parse_args([]), wgan.parse_args([]), wgan_gp.parse_args([])
    assert (d.lr, d.beta1, d.batch_size, d.norm, d.z_dim) == (2e-4, 0.5, 128, "batch", 100)
    assert (w.lr, w.clip, w.n_critic, w.batch_size, w.critic_warmup) == (5e-5, 0.01, 5, 64, True)
    assert (gp.lr, gp.beta1, gp.beta2, gp.n_critic, gp.gp_weight, gp.batch_size) == (1e-4, 0.0, 0.9, 5, 10.0, 64)
    assert gp.gen_batch_multiple == 1 and not any(a.dequantize for a in (d, w, gp))  # the CIFAR ResNet recipe's only


# ------------------------------------------------------------------------------------------------ the step
def _step_once(module, eager, extra=()):
    """Build everything as main() does, from fixed seeds, and take one train step; return its metrics and weights."""
    args = module.parse_args(TINY + ["--n_critic", "2"] * (module is not dcgan) + ["--no-critic_warmup"] * (module is wgan)
                             + list(extra))
    keras.utils.set_random_seed(3)
    strategy = tf.distribute.get_strategy()
    generator = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width, first_bn=args.first_bn)
    critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
    g_opt, c_opt = module.make_optimizers(args, generator, critic)
    rng = tf.random.Generator.from_seed(5)
    progress = training.Progress(generator=g_opt, critic=c_opt)
    real = tf.random.stateless_uniform([4, 16, 28, 28, 1], seed=[1, 2], minval=-1, maxval=1)
    iterator = iter(tf.data.Dataset.from_tensor_slices(real))
    tf.config.run_functions_eagerly(eager)
    try:
        step = module.make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng, progress)
        metrics = step(iterator, tf.constant(1))
    finally:
        tf.config.run_functions_eagerly(False)
    assert int(progress.step) == 1 and int(progress.batches) == getattr(args, "n_critic", 1)
    weights = [v.numpy() for v in generator.variables + critic.variables]
    return {k: float(v) for k, v in metrics.items()}, weights


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_train_step_is_the_same_eager_and_under_tf_function(name):
    m_eager, w_eager = _step_once(SCRIPTS[name], eager=True)
    m_graph, w_graph = _step_once(SCRIPTS[name], eager=False)
    assert m_eager.keys() == m_graph.keys()
    for k in m_eager:
        assert np.isclose(m_eager[k], m_graph[k], rtol=1e-4, atol=1e-5), k
    assert all(np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(w_eager, w_graph))
    assert any(not np.allclose(a, b) for a, b in zip(w_eager, _fresh_weights(SCRIPTS[name])))  # it did train


def _fresh_weights(module):
    args = module.parse_args(TINY)
    keras.utils.set_random_seed(3)
    generator = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width, first_bn=args.first_bn)
    critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
    return [v.numpy() for v in generator.variables + critic.variables]


def test_wgan_step_leaves_every_critic_weight_clipped():
    args = wgan.parse_args(TINY)
    _, weights = _step_once(wgan, eager=False)
    keras.utils.set_random_seed(3)
    n_generator = len(ops.make_generator(args.image_size, args.channels, args.z_dim, args.width,
                                         first_bn=args.first_bn).variables)
    critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
    for v, w in zip(critic.variables, weights[n_generator:]):
        if v.trainable:
            assert np.abs(w).max() <= args.clip + 1e-7, v.path


def test_xla_step_runs_on_cpu():
    metrics, _ = _step_once(wgan_gp, eager=False, extra=["--xla"])
    assert all(np.isfinite(v) for v in metrics.values())


# ------------------------------------------------------------------------------------------ whole scripts
def run_script(script, *args, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    # Bookkeeping, not training state: the save counter, and train_seconds, a wall clock.
    skip = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
            "train_seconds/.ATTRIBUTES/VARIABLE_VALUE")
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k not in skip}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_end_to_end(name, tiny_fashion, tmp_path):
    run_dir = tmp_path / "run"
    extra = ["--no-critic_warmup"] if name == "wgan" else []
    argv = ["--data_dir", tiny_fashion, *TINY, "--steps", 4, "--ckpt_every", 2, "--sample_every", 2,
            "--out_dir", run_dir, *extra]
    if name == "dcgan":  # as a user runs it, `python dcgan.py ...`: the script's own __main__ line included
        run_script(f"{name}.py", *argv)
    else:  # the same main() in this process, a TensorFlow start-up (seconds) cheaper
        SCRIPTS[name].main([str(a) for a in argv])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["variant"] == name and config["image_size"] == 28 and config["versions"]["tensorflow"]
    assert sorted(os.listdir(run_dir / "samples")) == ["step_000002.png", "step_000004.png"]
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith("ckpt-4")
    assert os.listdir(run_dir / "logs")
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(v) for r in rows for v in r.values())
    expected = {"dcgan": "d_real", "wgan": "clipped_share", "wgan_gp": "gradient_penalty"}[name]
    assert {"critic_loss", "generator_loss", "steps_per_sec", expected} <= rows[-1].keys()
    # sample.py on the fresh run: the generator rebuilt from config.json, in inference mode, with the run's seed
    # redraws the run's own last grid pixel for pixel.
    out = sample.main([str(run_dir), "--seed", "0", "--out", str(tmp_path / "grid.png")])
    assert (tmp_path / "grid.png").read_bytes() == (run_dir / "samples" / "step_000004.png").read_bytes(), out


@pytest.mark.parametrize("name", ["wgan", "dcgan",  # WGAN-GP's is slow (9 s); its repeat test below is the default
                                  pytest.param("wgan_gp", marks=pytest.mark.slow)])
def test_stopped_and_resumed_run_equals_straight_run(name, tiny_fashion, tmp_path):
    module = SCRIPTS[name]
    base = ["--data_dir", tiny_fashion, *TINY, "--deterministic", "--ckpt_every", 100, "--sample_every", 100]
    base = [str(a) for a in base]
    # 7 generator steps at batch 16 pass the 96-image epoch boundary (6 batches) for every variant; WGAN's stay
    # inside its 100-iteration critic warm-up, whose position must survive the resume.
    module.main(base + ["--steps", "7", "--out_dir", str(tmp_path / "straight")])
    module.main(base + ["--steps", "3", "--out_dir", str(tmp_path / "split")])
    module.main(["--resume", str(tmp_path / "split"), "--steps", "7"])
    straight = checkpoint_values(str(tmp_path / "straight" / "ckpt" / "ckpt-7"))
    resumed = checkpoint_values(str(tmp_path / "split" / "ckpt" / "ckpt-7"))
    assert straight.keys() == resumed.keys() and len(straight) > 20
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    drop = ("steps_per_sec", "images_per_sec", "train_seconds")
    last = [{k: v for k, v in read_metrics(tmp_path / d)[-1].items() if k not in drop} for d in ("straight", "split")]
    assert last[0] == last[1] and last[0]["step"] == 7


def test_deterministic_runs_repeat_bit_for_bit(tiny_fashion, tmp_path):
    argv = ["--data_dir", tiny_fashion, *TINY, "--deterministic", "--steps", "3", "--n_critic", "2"]
    for name in ("a", "b"):
        wgan_gp.main(argv + ["--out_dir", str(tmp_path / name)])
    a, b = (checkpoint_values(str(tmp_path / name / "ckpt" / "ckpt-3")) for name in "ab")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "samples" / "step_000003.png").read_bytes() == \
        (tmp_path / "b" / "samples" / "step_000003.png").read_bytes()


def test_resume_refuses_conflicting_flags_and_other_variants(tiny_fashion, tmp_path, capsys):
    run_dir = tmp_path / "run"
    dcgan.main(["--data_dir", tiny_fashion, *TINY, "--steps", "2", "--out_dir", str(run_dir)])
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    for module, extra, words in [(dcgan, ["--image_size", "32"], "--image_size 32 conflicts"),
                                 (dcgan, ["--channels", "3"], "--channels 3 conflicts"),
                                 (wgan, [], "resume it with dcgan.py")]:
        with pytest.raises(SystemExit) as e:  # as `python dcgan.py ...` ends: common.cli around main()
            common.cli(lambda: module.main(["--resume", str(run_dir), *extra]))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and words in err[-1] and len(err) == 1, err
    assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}  # nothing was touched
    # A new run into an existing run directory is refused too, not written over.
    with pytest.raises(common.RunError, match="already holds a run"):
        dcgan.main(["--data_dir", tiny_fashion, "--out_dir", str(run_dir)])


def test_fit_pad_is_saved_fed_to_the_data_and_refused_on_resume_if_changed(tiny_fashion, tmp_path, capsys):
    import data
    argv = ["--data_dir", tiny_fashion, *TINY, "--image_size", "32", "--fit", "pad"]
    batch = next(iter(devices.distribute_dataset(tf.distribute.get_strategy(), dcgan.parse_args(argv), 0)))
    padded = {image.tobytes() for image in data.load_images("fashion_mnist", tiny_fashion, 32, fit="pad")}
    assert {image.tobytes() for image in data.to_uint8(batch)} <= padded
    run_dir = tmp_path / "run"
    dcgan.main(argv + ["--steps", "1", "--out_dir", str(run_dir)])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["fit"] == "pad"
    capsys.readouterr()
    for edit, extra, words in [(None, ["--fit", "resize"], "--fit resize conflicts with the saved run's pad"),
                               ("fit", ["--fit", "pad"], "--fit pad conflicts with the saved run's resize")]:
        if edit:  # a config.json from before --fit: a resize run
            del config[edit]
            (run_dir / "config.json").write_text(json.dumps(config))
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        code, _, err = cli_in_process(dcgan.main, ["--resume", run_dir, *extra], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and words in lines[0], lines
        assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}  # nothing was touched
    # Where padding means nothing: one sentence, and no run directory.
    (tmp_path / "pngs").mkdir()
    data.save_image(np.zeros((8, 8), np.uint8), str(tmp_path / "pngs" / "0.png"))
    for extra, words in [(["--image_size", "16"], "fashion_mnist is 28x28, --image_size is 16; use --fit resize."),
                         (["--dataset", "folder", "--data_dir", tmp_path / "pngs"], "for the built-in datasets")]:
        code, _, err = cli_in_process(dcgan.main, [*argv, *extra, "--out_dir", tmp_path / "refused"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --fit pad") and words in lines[0], lines
        assert not (tmp_path / "refused").exists()


def test_first_bn_is_saved_and_runs_from_before_it_resume_and_restore_per_channel(tiny_fashion, tmp_path, capsys):
    """dcgan.py's generator normalises z's projection per unit by default (--first_bn feature); a run saved before
    the flag existed is per channel, and resumes and restores as such; changing it on resume is refused."""
    def first_gamma(generator):
        return next(l for l in generator.layers if isinstance(l, keras.layers.BatchNormalization)).gamma.shape
    argv = ["--data_dir", tiny_fashion, *TINY, "--steps", "1"]
    new, old = tmp_path / "new", tmp_path / "old"
    dcgan.main(argv + ["--out_dir", str(new)])
    assert json.loads((new / "config.json").read_text())["first_bn"] == "feature"
    assert first_gamma(common.load_generator(new)[0]) == (7 * 7 * 16,)  # base 7 at 28x28, 16 channels there
    dcgan.main(argv + ["--first_bn", "channel", "--out_dir", str(old)])
    config = json.loads((old / "config.json").read_text())
    del config["first_bn"]  # as written before --first_bn existed
    (old / "config.json").write_text(json.dumps(config))
    assert first_gamma(common.load_generator(old)[0]) == (16,)
    capsys.readouterr()
    code, _, err = cli_in_process(dcgan.main, ["--resume", old, "--steps", 2], capsys)
    assert code == 0, err
    assert tf.train.latest_checkpoint(str(old / "ckpt")).endswith("ckpt-2")
    assert first_gamma(common.load_generator(old)[0]) == (16,)  # its config still has no first_bn: per channel
    before = {p: p.read_bytes() for p in new.rglob("*") if p.is_file()}
    code, _, err = cli_in_process(dcgan.main, ["--resume", new, "--first_bn", "channel", "--steps", 2], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--first_bn channel conflicts with the saved run's feature" in lines[0]
    assert before == {p: p.read_bytes() for p in new.rglob("*") if p.is_file()}


def test_missing_data_path_is_one_clear_sentence(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code, _, err = cli_in_process(wgan_gp.main, ["--data_dir", missing, "--steps", 1, "--out_dir", tmp_path / "r"],
                                  capsys)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[-1].startswith("error: ") and str(missing) in lines[-1]
    assert not (tmp_path / "r").exists()  # no half-made run directory left behind


def test_checkpoint_from_another_size_is_refused(tiny_fashion, tmp_path, capsys):
    run_dir = tmp_path / "run"
    wgan_gp.main(["--data_dir", tiny_fashion, *TINY, "--steps", "1", "--n_critic", "1", "--out_dir", str(run_dir)])
    config = json.loads((run_dir / "config.json").read_text())
    config["width"] = 16  # as if config and checkpoint came from different runs
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, err = cli_in_process(wgan_gp.main, ["--resume", run_dir, "--steps", 2], capsys)
    assert code == 2 and "does not fit" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith("ckpt-1")


def test_best_checkpoint_selection(tmp_path):
    value = tf.Variable(0.0)
    ckpt = common.Checkpoints(str(tmp_path), 3, value=value)
    kept = []
    for step, score in [(1, 5.0), (2, 3.0), (3, 4.0), (4, float("nan")), (5, 2.5), (6, 2.5), (7, 9.0)]:
        value.assign(float(step))
        kept.append(ckpt.save_if_best(step, score))
        ckpt.save(step)
    assert kept == [True, True, False, False, True, False, False]  # lower is better; NaN and ties never win
    assert common.checkpoint_path(str(tmp_path), best=True).endswith("ckpt-5")
    assert len([f for f in os.listdir(tmp_path / "ckpt_best") if f.endswith(".index")]) == 1
    # The best score travels with the rolling checkpoints: a resumed run still knows 2.5 is the one to beat.
    again = common.Checkpoints(str(tmp_path), 3, value=tf.Variable(0.0))
    again.restore_latest()
    assert float(again.best_score) == 2.5 and not again.save_if_best(8, 2.7) and again.save_if_best(8, 2.0)


def test_eval_every_logs_scores_and_keeps_the_best_checkpoint(tiny_fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_CACHE", str(tmp_path / "cache"))  # the offline classifier is trained here, once
    run_dir = tmp_path / "run"
    dcgan.main(["--data_dir", tiny_fashion, *TINY, "--steps", "4", "--eval_every", "2", "--eval_samples", "32",
                "--out_dir", str(run_dir)])
    scores = {r["step"]: r["eval/classifier_fd"] for r in read_metrics(run_dir) if "eval/classifier_fd" in r}
    assert sorted(scores) == [2, 4] and all(np.isfinite(v) and v >= 0 for v in scores.values())
    best_step = min(scores, key=scores.get)
    assert common.checkpoint_path(str(run_dir), best=True).endswith(f"ckpt-{best_step}")
    out = sample.main([str(run_dir), "--best", "--out", str(tmp_path / "best.png")])
    assert os.path.getsize(out) > 0

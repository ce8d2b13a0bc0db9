"""--arch and --lr_decay: every architecture's shapes, the ResNet against the authors' layer list, one train step of
every variant x architecture, resume and sample.py on a non-default architecture, the decay's clock."""
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import common
import training
import dcgan
import ops
import sample
import wgan
import wgan_gp

from conftest import cli_in_process

SCRIPTS = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp}
SIZES = {arch: (32,) if arch == "resnet" else (28, 32, 64, 128) for arch in ops.ARCHS}
TINY = ["--image_size", "28", "--width", "8", "--batch_size", "16", "--z_dim", "16", "--log_every", "1"]


@pytest.mark.parametrize("arch, sizes", [pytest.param(arch, sizes, marks=pytest.mark.slow if sizes == "large" else ())
                                         for arch in ops.ARCHS  # 64 and 128 (not the ResNet's): slow
                                         for sizes in ("small",) + ("large",) * (arch != "resnet")])
def test_output_shapes_at_every_allowed_size(arch, sizes):
    for size in [s for s in SIZES[arch] if (s >= 64) == (sizes == "large")]:
        for channels in (1, 3) if size == 32 else (1,):
            generator = ops.make_generator(size, channels, z_dim=8, width=4, arch=arch)
            critic = ops.make_critic(size, channels, width=4, norm="layer", arch=arch)
            images = generator(tf.random.normal([2, 8]), training=True)
            assert images.shape == (2, size, size, channels) and images.dtype == tf.float32, (arch, size)
            assert np.abs(images.numpy()).max() <= 1.0
            assert critic(images, training=True).shape == (2, 1)


def _layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize("arch", ["dcgan", "tanh"])
def test_first_bn_feature_normalises_each_unit_of_the_projection_over_the_batch(arch):
    """--first_bn feature (Newmu/dcgan_code): each of the 4*4*16 projected units has its own statistics over the
    batch, in the fused [B, 1, 1, units] layout; channel: statistics per channel over the batch and the 4x4 positions,
    so single units are not centred. Architectures without BatchNorm in G ignore it."""
    z = tf.random.stateless_normal([32, 8], seed=[4, 2])
    means = {}
    for first_bn in ops.FIRST_BNS:
        g = ops.make_generator(32, 1, 8, 4, arch=arch, first_bn=first_bn)
        bn = _layers(g, keras.layers.BatchNormalization)[0]
        units = 4 * 4 * 16 if first_bn == "feature" else 16
        assert isinstance(bn, ops.BatchNormalization) and bn.gamma.shape == (units,)
        assert bn.input.shape == ((None, 1, 1, units) if first_bn == "feature" else (None, 4, 4, 16))  # 4-d: fused
        bn.beta.assign(tf.zeros_like(bn.beta))
        bn.gamma.assign(tf.ones_like(bn.gamma))
        normalised = keras.Model(g.inputs, bn.output)(z, training=True).numpy().reshape(32, -1)
        means[first_bn] = np.abs(normalised.mean(axis=0)).max()  # the largest per-unit batch mean
    assert means["feature"] < 1e-5 < 0.1 < means["channel"], means
    for other in ("nobn_g", "no_norm"):
        assert [v.shape for v in ops.make_generator(32, 1, 8, 4, arch=other, first_bn="feature").weights] == \
            [v.shape for v in ops.make_generator(32, 1, 8, 4, arch=other, first_bn="channel").weights]
    with pytest.raises(ValueError, match="first BatchNorm"):
        ops.make_generator(32, 1, 8, 4, first_bn="unit")


def test_each_architecture_has_its_papers_features():
    def build(arch, norm="batch"):
        return ops.make_generator(32, 1, 8, 4, arch=arch), ops.make_critic(32, 1, 4, norm=norm, arch=arch)
    bn = keras.layers.BatchNormalization
    dcgan_critic = [v.shape for v in build("dcgan")[1].trainable_variables]
    for arch in ("nobn_g", "mlp_g"):  # the critic stays DCGAN's, the generator loses BatchNorm
        g, c = build(arch)
        assert [v.shape for v in c.trainable_variables] == dcgan_critic and not _layers(g, bn)
    g, _ = build("nobn_g")  # a constant filter count: every transposed conv but the output has `width` filters
    assert [layer.filters for layer in _layers(g, keras.layers.Conv2DTranspose)] == [4, 4, 1]
    g, _ = build("mlp_g")
    assert [layer.units for layer in _layers(g, keras.layers.Dense)] == [512] * 4 + [32 * 32]
    g, c = build("no_norm", norm="layer")
    assert not _layers(g, bn) and not _layers(c, bn) and not _layers(c, ops.LayerNorm)
    g, c = build("tanh")
    assert _layers(g, bn) and _layers(c, bn) and not _layers(g, keras.layers.ReLU)
    assert not _layers(c, keras.layers.LeakyReLU) and len(_layers(c, keras.layers.Activation)) == 3
    # WGAN-GP's --norm layer replaces every BatchNorm of the critic, for each architecture that has one.
    for arch in ops.ARCHS:
        assert not _layers(ops.make_critic(32, 1, 4, norm="layer", arch=arch), bn), arch


def test_resnet_refuses_other_sizes_in_one_sentence(capsys):
    with pytest.raises(ValueError, match="32x32 images only"):
        ops.make_generator(64, 3, arch="resnet")
    code, _, err = cli_in_process(wgan_gp.main, ["--arch", "resnet", "--image_size", "28"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "32x32" in lines[0] and "--image_size 28" in lines[0]


def authors_resnet_counts(dim=128, z=128, channels=3):
    """Parameter counts from gan_cifar_resnet.py's layer list (unsupervised), written out layer by layer:
    Linear(in, out) = in*out + out; Conv2D(in, out, k) = k*k*in*out + out (biases=True everywhere); tflib's
    BatchNorm = scale + offset per channel."""
    def linear(i, o):
        return i * o + o

    def conv(i, o, k):
        return k * k * i * o + o

    def bn(c):
        return 2 * c
    up_block = conv(dim, dim, 1) + bn(dim) + conv(dim, dim, 3) + bn(dim) + conv(dim, dim, 3)  # Shortcut, N1, C1, ...
    generator = linear(z, 4 * 4 * dim) + 3 * up_block + bn(dim) + conv(dim, channels, 3)
    optimized = conv(channels, dim, 1) + conv(channels, dim, 3) + conv(dim, dim, 3)  # Discriminator.1
    down_block = conv(dim, dim, 1) + conv(dim, dim, 3) + conv(dim, dim, 3)  # Discriminator.2
    plain_block = conv(dim, dim, 3) + conv(dim, dim, 3)  # Discriminator.3, .4: identity shortcut
    critic = optimized + down_block + 2 * plain_block + linear(dim, 1)
    return generator, critic


@pytest.mark.parametrize("dim, channels", [(128, 3), (16, 1)])
def test_resnet_parameter_counts_are_the_authors(dim, channels):
    g = ops.make_generator(32, channels, 128, dim, arch="resnet")
    c = ops.make_critic(32, channels, dim, norm="none", arch="resnet")
    assert (ops.count_params(g), ops.count_params(c)) == authors_resnet_counts(dim, 128, channels)
    # 1,204,483 and 1,053,825 with the authors' DIM_G = DIM_D = 128 on CIFAR-10 (RGB)
    assert dim != 128 or (ops.count_params(g), ops.count_params(c)) == (1_204_483, 1_053_825)


def test_resnet_initialisation_is_tflibs():
    keras.utils.set_random_seed(0)
    g = ops.make_generator(32, 3, 128, 128, arch="resnet")
    c = ops.make_critic(32, 3, 128, norm="none", arch="resnet")
    for model in (g, c):
        for layer in _layers(model, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = layer.kernel.numpy()
            fan_in, fan_out = np.prod(kernel.shape[:-1]), kernel.shape[-1] * np.prod(kernel.shape[:-2])
            # he_init (sqrt(4 / fans)) for the 3x3 convs but the generator's output conv; sqrt(2 / fans) for the
            # 1x1 shortcuts, the output conv and the Linear layers.
            he = kernel.ndim == 4 and kernel.shape[0] == 3 and layer.filters == 128
            std = np.sqrt((4.0 if he else 2.0) / (fan_in + fan_out))
            assert abs(kernel.std() / std - 1) < 0.1 and np.abs(kernel).max() <= std * np.sqrt(3) + 1e-6, layer.name
            assert not layer.bias.numpy().any()
    for layer in _layers(g, keras.layers.BatchNormalization):
        assert np.all(layer.gamma.numpy() == 1) and np.all(layer.beta.numpy() == 0)


def step_once(module, arch, extra=()):
    """One train step (eagerly) from fresh networks of `arch` (tiny: batch 4, width 4); returns its metrics."""
    args = module.parse_args(["--image_size", "32" if arch == "resnet" else "28", "--width", "4", "--batch_size",
                              "4", "--z_dim", "8", "--arch", arch, *["--n_critic", "2"] * (module is not dcgan),
                              *["--no-critic_warmup"] * (module is wgan),
                              *extra])
    keras.utils.set_random_seed(3)
    generator = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width, arch=args.arch)
    critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm, arch=args.arch)
    g_opt, c_opt = module.make_optimizers(args, generator, critic)
    progress = training.Progress(generator=g_opt, critic=c_opt)
    before = [v.numpy() for v in generator.trainable_variables + critic.trainable_variables]
    real = tf.random.stateless_uniform([2, 4, args.image_size, args.image_size, 1], seed=[1, 2], minval=-1, maxval=1)
    step = module.make_train_step(args, tf.distribute.get_strategy(), generator, critic, g_opt, c_opt,
                                  tf.random.Generator.from_seed(5), progress)
    iterator = iter(tf.data.Dataset.from_tensor_slices(real))
    tf.config.run_functions_eagerly(True)  # the step's code, without minutes of tracing 18 graphs on a CPU
    try:
        metrics = step(iterator, tf.constant(1))
    finally:
        tf.config.run_functions_eagerly(False)
    after = [v.numpy() for v in generator.trainable_variables + critic.trainable_variables]
    return {k: float(v) for k, v in metrics.items()}, before, after, (g_opt, c_opt, progress)


# Every architecture with one variant in the default suite (the three variants in turn, ResNet with WGAN-GP, its
# recipe's), the rest of the 3 x 6 matrix marked slow.
FAST = {("dcgan", "dcgan"), ("wgan", "nobn_g"), ("wgan_gp", "mlp_g"), ("dcgan", "no_norm"), ("wgan", "tanh"),
        ("wgan_gp", "resnet")}


@pytest.mark.parametrize("name, arch", [pytest.param(n, a, marks=() if (n, a) in FAST else pytest.mark.slow)
                                        for n in sorted(SCRIPTS) for a in ops.ARCHS])
def test_one_train_step_of_every_variant_and_architecture(name, arch):
    metrics, before, after, _ = step_once(SCRIPTS[name], arch)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert np.mean(changed) > 0.9, f"{sum(changed)} of {len(changed)} variables were updated"


def test_linear_decay_follows_generator_steps_not_critic_iterations():
    _, _, _, (g_opt, c_opt, progress) = step_once(wgan_gp, "dcgan", ["--lr_decay", "linear", "--steps", "4"])
    # One generator step with 2 critic updates: both learning rates are at 1 - 1/4 of --lr, not 1 - 2/4.
    assert int(c_opt.iterations) == 2 and int(g_opt.iterations) == 1 and int(progress.step) == 1
    assert np.isclose(float(c_opt.learning_rate), 0.75e-4) and np.isclose(float(g_opt.learning_rate), 0.75e-4)
    progress.step.assign(7)  # past --steps: 0, never negative
    assert float(g_opt.learning_rate) == 0.0


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    skip = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
            "train_seconds/.ATTRIBUTES/VARIABLE_VALUE")
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k not in skip}


def test_resume_and_sample_on_a_non_default_arch_with_linear_decay(tiny_fashion, tmp_path, capsys):
    straight, run_dir = tmp_path / "straight", tmp_path / "split"
    wgan_gp.main(["--data_dir", tiny_fashion, *TINY, "--n_critic", "2", "--deterministic", "--arch", "nobn_g",
                  "--lr_decay", "linear", "--ckpt_every", "2", "--keep_ckpts", "5", "--sample_every", "100",
                  "--steps", "5", "--out_dir", str(straight)])
    # The same run as if stopped after step 2 (--steps cannot change under a linear decay): its newest two
    # checkpoints removed, then resumed to the end.
    shutil.copytree(straight, run_dir)
    for f in (run_dir / "ckpt").glob("ckpt-[45].*"):
        f.unlink()
    tf.compat.v1.train.update_checkpoint_state(str(run_dir / "ckpt"), str(run_dir / "ckpt" / "ckpt-2"),
                                               all_model_checkpoint_paths=[str(run_dir / "ckpt" / "ckpt-2")])
    wgan_gp.main(["--resume", str(run_dir)])
    expected, resumed = (checkpoint_values(str(d / "ckpt" / "ckpt-5")) for d in (straight, run_dir))
    assert expected.keys() == resumed.keys() and not any("learning_rate" in k for k in expected)
    for key in expected:
        np.testing.assert_array_equal(expected[key], resumed[key], err_msg=key)
    assert json.loads((run_dir / "config.json").read_text())["arch"] == "nobn_g"
    # sample.py rebuilds the nobn_g generator from config.json and redraws the run's last grid.
    sample.main([str(run_dir), "--seed", "0", "--out", str(tmp_path / "grid.png")])
    assert (tmp_path / "grid.png").read_bytes() == (run_dir / "samples" / "step_000005.png").read_bytes()
    # A resume that changes --arch, or --steps under a linear decay, is refused in one sentence, touching nothing.
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    for extra, words in [(["--arch", "dcgan"], "--arch dcgan conflicts with the saved run's nobn_g"),
                         (["--steps", "9"], "learning rate decay")]:
        code, _, err = cli_in_process(wgan_gp.main, ["--resume", run_dir, *extra], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and words in lines[0], lines
    assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_a_config_without_arch_is_a_dcgan_run(tiny_fashion, tmp_path, capsys):
    run_dir = tmp_path / "run"
    dcgan.main(["--data_dir", tiny_fashion, *TINY, "--steps", "1", "--out_dir", str(run_dir)])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == "dcgan" and config["lr_decay"] == "none"
    for key in ("arch", "lr_decay"):  # as written before these flags existed
        del config[key]
    (run_dir / "config.json").write_text(json.dumps(config))
    generator, _, _ = common.load_generator(str(run_dir))
    assert generator.output_shape == (None, 28, 28, 1)
    code, _, err = cli_in_process(dcgan.main, ["--resume", run_dir, "--arch", "mlp_g"], capsys)
    assert code == 2 and "--arch mlp_g conflicts with the saved run's dcgan" in err


@pytest.mark.parametrize("multiple", [1, 2])
def test_wgan_gp_generator_update_draws_gen_batch_multiple_times_the_batch(monkeypatch, multiple):
    # The authors' CIFAR-10 ResNet code updates the generator on GEN_BS_MULTIPLE = 2 times the critic's batch.
    seen = {"critic": set(), "generator": []}
    critic_loss, generator_loss = wgan_gp.critic_loss, wgan_gp.generator_loss
    monkeypatch.setattr(wgan_gp, "critic_loss", lambda r, f: seen["critic"].add(f.shape[0]) or critic_loss(r, f))
    monkeypatch.setattr(wgan_gp, "generator_loss", lambda f: seen["generator"].append(f.shape[0]) or generator_loss(f))
    metrics, before, after, _ = step_once(wgan_gp, "dcgan", ["--gen_batch_multiple", str(multiple)])
    assert seen == {"critic": {4}, "generator": [4 * multiple]}  # batch 4, two critic updates, one generator update
    assert all(np.isfinite(v) for v in metrics.values())
    assert not all(np.array_equal(b, a) for b, a in zip(before, after))

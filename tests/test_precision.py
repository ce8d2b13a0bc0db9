"""--precision bf16 and fp16: finite steps, float32 where it matters, the gradient penalty's accuracy, and runs that
resume and sample."""
import os

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

SCRIPTS = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp}
TINY = ["--image_size", "28", "--width", "8", "--batch_size", "16", "--z_dim", "16", "--log_every", "1"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_one_mixed_precision_step_is_finite(name, precision):
    module = SCRIPTS[name]
    args = module.parse_args(TINY + ["--precision", precision] + ["--n_critic", "2"] * (module is not dcgan)
                             + ["--no-critic_warmup"] * (module is wgan))
    devices.set_precision(args.precision)
    keras.utils.set_random_seed(0)
    generator = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width, first_bn=args.first_bn)
    critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
    g_opt, c_opt = module.make_optimizers(args, generator, critic)
    progress = training.Progress(generator=g_opt, critic=c_opt)
    real = tf.random.stateless_uniform([4, 16, 28, 28, 1], seed=[1, 2], minval=-1, maxval=1)
    step = module.make_train_step(args, tf.distribute.get_strategy(), generator, critic, g_opt, c_opt,
                                  tf.random.Generator.from_seed(1), progress)
    iterator = iter(tf.data.Dataset.from_tensor_slices(tf.tile(real, [4, 1, 1, 1, 1])))
    for _ in range(4):
        metrics = step(iterator, tf.constant(1))
        # fp16 may overflow at Keras' initial loss scale 2^15 (WGAN-GP's inner gradient does here): the loss scaler
        # then skips the update and halves the scale. Weights stay finite, and the guard does not count it as
        # a divergence; within a few steps the scale settles and every value is finite.
        assert all(np.isfinite(v.numpy()).all() for v in generator.variables + critic.variables)
        if all(np.isfinite(float(v)) for v in metrics.values()):
            break
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    progress.check()
    assert ("loss_scale/critic" in metrics) == (precision == "fp16")  # fp16's loss scale is logged
    compute = {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert any(layer.compute_dtype == compute for layer in critic.layers)  # it really computes in half precision
    # Weights stay float32 (so WGAN clips float32 weights), and so do the networks' outputs and LayerNorm.
    assert all(v.dtype == "float32" for v in generator.variables + critic.variables)
    assert generator.output.dtype == "float32" and critic.output.dtype == "float32"
    assert all(layer.compute_dtype == "float32" for layer in critic.layers if isinstance(layer, ops.LayerNorm))
    if module is wgan:
        assert max(float(tf.reduce_max(tf.abs(v))) for v in critic.trainable_variables) <= args.clip + 1e-7


def _penalty(precision, weights, real, fake, eps, scale=1.0):
    devices.set_precision(precision)
    critic = ops.make_critic(28, 1, width=8, norm="layer")
    critic.set_weights(weights)
    return [x.numpy() for x in wgan_gp.gradient_penalty(critic, real, fake, eps, scale=scale)]


def test_mixed_precision_gradient_penalty_matches_float32():
    keras.utils.set_random_seed(0)
    weights = ops.make_critic(28, 1, width=8, norm="layer").get_weights()
    real = tf.random.stateless_uniform([8, 28, 28, 1], seed=[3, 4], minval=-1, maxval=1)
    fake = tf.random.stateless_uniform([8, 28, 28, 1], seed=[5, 6], minval=-1, maxval=1)
    eps = tf.random.stateless_uniform([8, 1, 1, 1], seed=[7, 8])
    penalty32, norm32 = _penalty("fp32", weights, real, fake, eps)
    # At 2^11, the scale fp16 training settles at on this critic (2^15 overflows). bfloat16 keeps 8 significant
    # bits (relative rounding 2^-9 per operation), float16 11 bits: the norm, taken in
    # float32 from the half-precision backward pass, stays within 2% (bf16) and 0.5% (fp16) of float32's.
    for precision, scale, rtol in (("bf16", 1.0, 2e-2), ("fp16", 2.0 ** 11, 5e-3)):
        penalty, norm = _penalty(precision, weights, real, fake, eps, scale=tf.constant(scale))
        assert penalty.dtype == np.float32 and norm.dtype == np.float32
        np.testing.assert_allclose(norm, norm32, rtol=rtol, err_msg=precision)
        np.testing.assert_allclose(penalty, penalty32, rtol=rtol, atol=rtol * 2 * np.abs(norm32 - 1).max(),
                                   err_msg=precision)
    # A critic whose output layer is 1e-5 times smaller has input gradients of ~1e-7 per pixel, far below float16's
    # smallest normal number (6e-5): without the loss scale the inner backward pass loses them to underflow, with
    # it the norm keeps float32's accuracy.
    small = weights[:-2] + [weights[-2] * 1e-5, weights[-1]]
    _, tiny32 = _penalty("fp32", small, real, fake, eps)
    _, tiny16 = _penalty("fp16", small, real, fake, eps)
    _, scaled16 = _penalty("fp16", small, real, fake, eps, scale=tf.constant(2.0 ** 11))
    unscaled_error, scaled_error = (np.abs(x / tiny32 - 1).max() for x in (tiny16, scaled16))
    assert scaled_error < 5e-3 and unscaled_error > 10 * scaled_error, (unscaled_error, scaled_error)


def test_bfloat16_leaky_relu_has_keras_first_and_second_derivatives():
    # ops.LeakyReLU computes its bfloat16 gradient in float32 (a faster CPU kernel): the values and the gradient of
    # that gradient (WGAN-GP's penalty) must be Keras' own, up to bfloat16 rounding.
    x = tf.cast(tf.random.stateless_normal([4, 8, 8, 3], seed=[1, 2]), tf.bfloat16)
    w = tf.Variable(tf.cast(tf.random.stateless_normal([3], seed=[3, 4]), tf.bfloat16))

    def derivatives(layer):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = layer(x * w)
                assert y.dtype == tf.bfloat16
                loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
            dx = inner.gradient(loss, x)
            penalty = tf.reduce_sum(tf.cast(dx, tf.float32) ** 2)
        return [t.numpy().astype(np.float32) for t in (y, dx, outer.gradient(penalty, w))]

    ours, theirs = (derivatives(layer(0.2, dtype="mixed_bfloat16"))
                    for layer in (ops.LeakyReLU, keras.layers.LeakyReLU))
    assert np.abs(ours[1]).min() < 0.5 * np.abs(ours[1]).max()  # both slopes reached
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=1e-2 * np.abs(b).max())


@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=pytest.mark.slow),  # fp16 has the loss scale
                                       "fp16"])
def test_mixed_precision_run_resumes_and_samples(precision, tiny_fashion, tmp_path):
    run_dir = str(tmp_path / "run")
    base = ["--data_dir", tiny_fashion, *TINY, "--n_critic", "2", "--precision", precision, "--ckpt_every", "2"]
    wgan_gp.main(base + ["--steps", "2", "--out_dir", run_dir])
    wgan_gp.main(["--resume", run_dir, "--steps", "3"])
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "ckpt")).endswith("ckpt-3")
    keras.mixed_precision.set_global_policy("float32")  # sample.py runs in a fresh process at float32
    out = sample.main([run_dir, "--out", str(tmp_path / "grid.png")])
    assert os.path.getsize(out) > 0
    with pytest.raises(common.RunError, match="conflicts"):  # the precision is part of the experiment
        wgan_gp.parse_args(["--resume", run_dir, "--precision", "fp32"])

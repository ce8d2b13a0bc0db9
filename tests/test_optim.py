"""The optimizers as the scripts build them, update by update against the reference formulas computed by hand.

WGAN: ops.RMSprop must be torch.optim.RMSprop (the authors' code), w -= lr g / (sqrt(v) + eps), not Keras'
w -= lr g / sqrt(v + eps). DCGAN and WGAN-GP: keras Adam with eps 1e-8 is the TF1 AdamOptimizer (the WGAN-GP
authors' code), with "epsilon hat": w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps).
"""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import ops
from conftest import ROOT

# One weight per gradient size: tiny (a clipped critic's) to large; weights start at 0, so the weights themselves
# are compared (no cancellation in w - w0). The sign and size change between updates, so v is not a constant.
GRADS = np.array([1e-5, -3e-5, 1e-3, -0.1, 1.0])
SCALES = (1.0, 0.5, -2.0)
RTOL = 1e-5


def torch_rmsprop(grads, lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
    """torch.optim.RMSprop's step (torch/optim/rmsprop.py, single-tensor path) in float64 -> weights after each.
    lr: a number, or one per update."""
    w, v, a, buf, out = np.zeros_like(grads[0]), np.zeros_like(grads[0]), 0.0, 0.0, []
    for g, lr in zip(grads, np.broadcast_to(lr, len(grads))):
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            a = alpha * a + (1 - alpha) * g
            avg = np.sqrt(v - a * a) + eps
        else:
            avg = np.sqrt(v) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            w = w - lr * buf
        else:
            w = w - lr * g / avg
        out.append(w)
    return out


def tf1_adam(grads, lr, b1, b2, eps):
    """tf.compat.v1.train.AdamOptimizer's step (= Keras 3 Adam's) in float64 -> weights after each.

    Both raise the betas as float32 numbers to the power t for the bias correction: float32(0.999) is 1.3e-8 off,
    which makes 1 - b2^t 1.3e-5 and lr_t 6.4e-6 relatively off the exact value, so the reference does the same."""
    w, m, v, out = np.zeros_like(grads[0]), 0.0, 0.0, []
    b1_32, b2_32 = float(np.float32(b1)), float(np.float32(b2))
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * np.sqrt(1 - b2_32 ** t) / (1 - b1_32 ** t)
        w = w - lr_t * m / (np.sqrt(v) + eps)
        out.append(w)
    return out


def run(opt, grads, fn=lambda f: f):
    """Applies grads one by one to a float32 variable starting at 0 -> the variable after each update."""
    w = tf.Variable(np.zeros_like(grads[0]), dtype=tf.float32)
    opt.build([w])
    step = fn(lambda g: opt.apply_gradients([(g, w)]))
    out = []
    for g in grads:
        step(tf.constant(g, tf.float32))
        out.append(w.numpy().astype(np.float64))
    return out


def assert_updates(got, want):
    for t, (g, w) in enumerate(zip(got, want), start=1):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=0, err_msg=f"after update {t}")


# ----------------------------------------------------------------------------------------------- RMSprop
@pytest.mark.parametrize("n", [1, 3])
def test_rmsprop_as_wgan_builds_it_is_torchs(n):
    grads = [GRADS * s for s in SCALES[:n]]
    assert_updates(run(ops.RMSprop(5e-5), grads), torch_rmsprop(grads, 5e-5))


def test_rmsprop_first_update_sizes():
    """The issue's numbers: one update of 1e-5 moves a weight lr g / (0.1 |g| + 1e-8) = 4.95e-4 (torch)."""
    (w,) = run(ops.RMSprop(5e-5), [np.array([1e-5])])
    assert -w[0] == pytest.approx(4.950495e-4, rel=1e-6)


def test_keras_rmsprop_is_the_old_behaviour():
    """Keras' sqrt(v + eps) with the same numbers moves a 1e-5 gradient's weight ~100x less (5e-6): the bug."""
    grads = [np.array([1e-5, 1e-3])]
    (keras_w,) = run(keras.optimizers.RMSprop(5e-5, rho=0.99, epsilon=1e-8), grads)
    (ours,) = run(ops.RMSprop(5e-5), grads)
    np.testing.assert_allclose(keras_w, -5e-5 * grads[0] / np.sqrt(0.01 * grads[0] ** 2 + 1e-8), rtol=RTOL)
    assert ours[0] / keras_w[0] == pytest.approx(99.0, rel=0.01)
    assert ours[1] / keras_w[1] == pytest.approx(np.sqrt(2), rel=0.01)


@pytest.mark.parametrize("momentum, centered", [(0.9, False), (0.0, True), (0.5, True)])
def test_rmsprop_momentum_and_centered_are_torchs(momentum, centered):
    grads = [np.array([1e-5, -3e-5, 1e-3, -0.1, 1.0]) * s for s in (1.0, 0.7, 1.3)]  # same sign: v - a^2 > 0
    opt = ops.RMSprop(1e-3, momentum=momentum, centered=centered)
    assert_updates(run(opt, grads), torch_rmsprop(grads, 1e-3, momentum=momentum, centered=centered))


def test_rmsprop_learning_rate_schedule():
    """The scheduled learning rate reaches update_step: lr_t = 1e-3 * 0.5^t for the update at iterations t."""
    grads = [GRADS * s for s in SCALES]
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=1, decay_rate=0.5)
    assert_updates(run(ops.RMSprop(schedule), grads), torch_rmsprop(grads, 1e-3 * 0.5 ** np.arange(3)))


def test_rmsprop_tf_function_equals_eager():
    """Equal to a few float32 ulps: graph optimisations may reorder the arithmetic (1 ulp with Keras' update)."""
    grads = [GRADS * s for s in SCALES]
    eager = run(ops.RMSprop(5e-5), grads)
    graph = run(ops.RMSprop(5e-5), grads, fn=tf.function)
    assert_updates(graph, torch_rmsprop(grads, 5e-5))
    for e, g in zip(eager, graph):
        np.testing.assert_allclose(e, g, rtol=1e-6, atol=0)


def test_rmsprop_config_round_trip():
    opt = ops.RMSprop(5e-5, clipnorm=1.0)
    again = ops.RMSprop.from_config(opt.get_config())
    assert type(again) is ops.RMSprop
    assert (again.rho, again.epsilon, again.clipnorm) == (0.99, 1e-8, 1.0)
    assert float(again.learning_rate) == pytest.approx(5e-5)
    copy = keras.optimizers.deserialize(keras.optimizers.serialize(opt))  # registered: found by name
    assert type(copy) is ops.RMSprop and copy.epsilon == 1e-8


def test_rmsprop_checkpoint_restores_slots(tmp_path):
    """As the scripts do it: build() the slots, then restore; the next update continues exactly."""
    grads = [GRADS * s for s in SCALES]
    w = tf.Variable(np.zeros(len(GRADS)), dtype=tf.float32)
    opt = ops.RMSprop(5e-5)
    for g in grads[:2]:
        opt.apply_gradients([(tf.constant(g, tf.float32), w)])
    path = tf.train.Checkpoint(w=w, opt=opt).write(str(tmp_path / "ckpt"))
    slots = [v.numpy() for v in opt.variables]
    opt.apply_gradients([(tf.constant(grads[2], tf.float32), w)])
    uninterrupted = w.numpy()

    w2 = tf.Variable(np.full(len(GRADS), 7.0), dtype=tf.float32)
    opt2 = ops.RMSprop(5e-5)
    opt2.build([w2])
    tf.train.Checkpoint(w=w2, opt=opt2).read(path).assert_consumed()
    assert int(opt2.iterations) == 2
    for a, b in zip(slots, opt2.variables):
        np.testing.assert_array_equal(a, b.numpy())
    assert np.any(opt2._velocities[0].numpy() > 0)
    opt2.apply_gradients([(tf.constant(grads[2], tf.float32), w2)])
    np.testing.assert_array_equal(w2.numpy(), uninterrupted)


def test_keras_rmsprop_checkpoint_restores_into_ours(tmp_path):
    """Same slots with the same meaning (v): a run saved with keras.optimizers.RMSprop resumes with ops.RMSprop."""
    w = tf.Variable(np.zeros(len(GRADS)), dtype=tf.float32)
    old = keras.optimizers.RMSprop(5e-5, rho=0.99, epsilon=1e-8)
    old.apply_gradients([(tf.constant(GRADS, tf.float32), w)])
    path = tf.train.Checkpoint(w=w, opt=old).write(str(tmp_path / "ckpt"))
    new = ops.RMSprop(5e-5)
    new.build([w])
    tf.train.Checkpoint(w=w, opt=new).read(path).assert_consumed()
    np.testing.assert_array_equal(new._velocities[0].numpy(), old._velocities[0].numpy())
    assert int(new.iterations) == 1


def test_loss_scale_optimizer_wrapped_equals_unwrapped():
    """fp16 mixed precision: the loss is scaled by 2^15, the float32 gradients unscaled before ops.RMSprop."""
    g = tf.constant(GRADS, tf.float32)
    w = tf.Variable(np.zeros(len(GRADS)), dtype=tf.float32)
    lso = keras.optimizers.LossScaleOptimizer(ops.RMSprop(5e-5))
    lso.build([w])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(w * g)
            scaled = lso.scale_loss(loss)
        grad = tape.gradient(scaled, w)
        lso.apply_gradients([(grad, w)])
        return grad

    assert float(step()[0] / g[0]) == pytest.approx(2.0 ** 15)
    (plain,) = run(ops.RMSprop(5e-5), [GRADS])
    np.testing.assert_allclose(w.numpy(), plain, rtol=1e-6)
    assert_updates([w.numpy()], torch_rmsprop([GRADS], 5e-5))


# -------------------------------------------------------------------------------------------------- Adam
@pytest.mark.parametrize("lr, beta_1, beta_2", [(2e-4, 0.5, 0.999), (1e-4, 0.0, 0.9)], ids=["dcgan", "wgan_gp"])
@pytest.mark.parametrize("n", [1, 3])
def test_adam_as_the_scripts_build_it_is_tf1s(lr, beta_1, beta_2, n):
    grads = [GRADS * s for s in SCALES[:n]]
    got = run(keras.optimizers.Adam(lr, beta_1, beta_2, epsilon=1e-8), grads)
    assert_updates(got, tf1_adam(grads, lr, beta_1, beta_2, 1e-8))


# ---------------------------------------------------------------------------------- two devices, in a subprocess
SCRIPT = r'''
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
import ops
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    w = tf.Variable(tf.zeros([3]))
    opt = ops.RMSprop(5e-5)
    opt.build([w])
per_replica = tf.constant([[1e-5, -1e-3, 0.1], [3e-5, 2e-3, 0.3]])  # one gradient per device

@tf.function
def step():
    def update():
        g = per_replica[tf.distribute.get_replica_context().replica_id_in_sync_group]
        opt.apply_gradients([(g, w)])
    strategy.run(update)

out = {"replicas": strategy.num_replicas_in_sync, "w": [], "v": []}
for _ in range(2):
    step()
    out["w"].append([x.numpy().tolist() for x in strategy.experimental_local_results(w)])
    out["v"].append([x.numpy().tolist() for x in strategy.experimental_local_results(opt._velocities[0].value)])
print(json.dumps(out))
'''


def test_rmsprop_mirrored_strategy_sums_the_devices_gradients():
    """Two logical CPUs: both replicas end equal, updated with the SUM of their gradients (Keras' all-reduce)."""
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    g = np.array([1e-5, -1e-3, 0.1]) + np.array([3e-5, 2e-3, 0.3])
    want = torch_rmsprop([g, g], 5e-5)
    for t in range(2):
        w0, w1 = (np.array(x) for x in out["w"][t])
        np.testing.assert_array_equal(w0, w1)
        np.testing.assert_array_equal(*(np.array(x) for x in out["v"][t]))
        np.testing.assert_allclose(w0, want[t], rtol=RTOL, atol=0)


@pytest.mark.parametrize("name", ["dcgan", "wgan", "wgan_gp"])
def test_each_scripts_make_optimizers_update_as_the_reference(name):
    """The optimizers exactly as main() gets them (module.make_optimizers with the script's default flags)."""
    import importlib
    module = importlib.import_module(name)
    args = module.parse_args([])
    model = keras.Sequential([keras.Input((len(GRADS),)), keras.layers.Dense(1, use_bias=False)])
    for opt in module.make_optimizers(args, model, model):
        w = model.trainable_variables[0]
        w.assign(np.zeros(w.shape))
        got = []
        for scale in SCALES:
            opt.apply_gradients([(tf.constant(scale * GRADS[:, None], tf.float32), w)])
            got.append(w.numpy()[:, 0].astype(np.float64))
        grads = [scale * GRADS for scale in SCALES]
        want = torch_rmsprop(grads, args.lr) if name == "wgan" else tf1_adam(grads, args.lr, args.beta1, args.beta2,
                                                                             eps=1e-8)
        assert_updates(got, want)

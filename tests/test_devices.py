"""The train steps under a two-device MirroredStrategy (two logical CPUs), as a later multi-GPU flag would run them."""
import json
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = r'''
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import ops, dcgan, wgan, wgan_gp
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": strategy.num_replicas_in_sync}
for module in (dcgan, wgan, wgan_gp):
    args = module.parse_args(["--image_size", "28", "--width", "8", "--batch_size", "16", "--z_dim", "16"])
    with strategy.scope():  # the same builders and step as the scripts use; only the strategy differs
        g = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width)
        c = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
        g_opt, c_opt = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
        g_opt.build(g.trainable_variables); c_opt.build(c.trainable_variables)
        rng = tf.random.Generator.from_seed(0)
    real = tf.random.stateless_uniform([8, 16, 28, 28, 1], seed=[0, 1], minval=-1, maxval=1)
    it = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(real)))
    step = module.make_train_step(args, strategy, g, c, g_opt, c_opt, rng)
    metrics = step(it) if module is dcgan else step(it, 2)
    copies = [[x.numpy() for x in strategy.experimental_local_results(v.value)] for v in g.variables + c.variables]
    out[module.__name__] = {
        "finite": all(np.isfinite(float(v)) for v in metrics.values()),
        "copies": min(len(x) for x in copies),
        "in_sync": all(np.array_equal(x[0], y) for x in copies for y in x[1:]),
        "max_critic_weight": max(float(tf.reduce_max(tf.abs(w))) for w in c.trainable_variables),
    }
print(json.dumps(out))
'''


def test_train_steps_run_mirrored_over_two_devices():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    for variant in ("dcgan", "wgan", "wgan_gp"):
        r = out[variant]
        # Every variable exists once per device and the copies agree after the step (all-reduced updates;
        # WGAN's clipping runs in cross-replica context, so it reaches both copies).
        assert r["finite"] and r["copies"] == 2 and r["in_sync"], (variant, r)
    assert out["wgan"]["max_critic_weight"] <= 0.01 + 1e-7

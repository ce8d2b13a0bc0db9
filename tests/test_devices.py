"""Several devices and machines: --strategy mirrored on two logical CPU devices, and --strategy multi_worker as two
processes on 127.0.0.1, the way several GPUs or machines run the same scripts."""
import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT

TINY = ["--image_size", "28", "--width", "8", "--batch_size", "16", "--z_dim", "16", "--log_every", "1"]

# Runs in a fresh interpreter: logical devices must be configured before TensorFlow starts.
MIRRORED = r'''
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
import common, dcgan, devices, ops, sample, training, wgan, wgan_gp
data_dir, out, tiny, mains, checks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
result = {}

# The scripts named in `mains` through main(): train with a checkpoint, resume, then sample.py on one device.
for module in [m for m in (dcgan, wgan, wgan_gp) if m.__name__ in mains.split(",")]:
    name = module.__name__
    run_dir = os.path.join(out, name)
    base = ["--data_dir", data_dir, *tiny, "--strategy", "mirrored", "--ckpt_every", "2", "--sample_every", "2"]
    module.main(base + ["--steps", "2", "--out_dir", run_dir] + ["--no-critic_warmup"] * (module is wgan))
    module.main(["--resume", run_dir, "--steps", "3"])
    grid = sample.main([run_dir, "--out", os.path.join(out, name + ".png")])
    config = json.load(open(os.path.join(run_dir, "config.json")))
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    result[name] = {"replicas": config["replicas"], "strategy": config["strategy"],
                    "ckpt": tf.train.latest_checkpoint(os.path.join(run_dir, "ckpt")), "grid": os.path.exists(grid),
                    "steps": [r["step"] for r in rows if "critic_loss" in r],
                    "finite": bool(all(np.isfinite(v) for r in rows for v in r.values()))}

if checks != "checks":
    print(json.dumps(result))
    sys.exit(0)

# What two devices refuse: each ends in one sentence and exit status 2, and leaves no run directory.
result["refusals"] = []
for i, extra in enumerate(json.loads(os.environ["REFUSALS"])):
    try:
        common.cli(lambda: dcgan.main(["--data_dir", data_dir, *tiny, "--strategy", "mirrored",
                                       "--out_dir", os.path.join(out, f"refused{i}")] + extra))
    except SystemExit as e:
        result["refusals"].append(e.code)
result["refused_dirs"] = [d for d in os.listdir(out) if d.startswith("refused")]

# The train steps keep every variable's copies equal (all-reduced updates; WGAN's clip in cross-replica context).
for module in (dcgan, wgan, wgan_gp):
    # Two critic updates written out (WGAN: and at step 0 the 98 more of its warm-up in a loop), traced per device.
    args = module.parse_args(["--data_dir", data_dir, *tiny, "--strategy", "mirrored"]
                             + ["--n_critic", "2"] * (module is not dcgan))
    strategy = devices.make_strategy(args)
    with strategy.scope():
        g = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width, first_bn=args.first_bn)
        c = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
        g_opt, c_opt = module.make_optimizers(args, g, c)
        rng = tf.random.Generator.from_seed(0)
        progress = training.Progress(generator=g_opt, critic=c_opt)
    it = iter(devices.distribute_dataset(strategy, args, start_batch=0))
    step = module.make_train_step(args, strategy, g, c, g_opt, c_opt, rng, progress)
    reduce, reduces = strategy.reduce, []  # counts the cross-device reductions the traced step holds
    strategy.reduce = lambda *a, **k: reduces.append(1) or reduce(*a, **k)
    try:
        step(it, tf.constant(1))
    finally:
        del strategy.reduce
    result.setdefault(module.__name__, {})["reduces"] = len(reduces)
    copies = [[x.numpy() for x in strategy.experimental_local_results(v.value)] for v in g.variables + c.variables]
    result[module.__name__]["copies"] = min(len(x) for x in copies)
    result[module.__name__]["in_sync"] = all(np.array_equal(x[0], y) for x in copies for y in x[1:])
    result[module.__name__]["max_critic_weight"] = max(float(tf.reduce_max(tf.abs(w))) for w in c.trainable_variables)

# Every replica draws its own noise from the checkpointed generator.
z = strategy.run(lambda: rng.normal([4, 3]))
a, b = (x.numpy() for x in strategy.experimental_local_results(z))
result["z_differ"] = bool(not np.allclose(a, b))

# Replica r reads slice r of each global batch: together they are the one-device batch, in the same order.
one = iter(devices.distribute_dataset(tf.distribute.get_strategy(), args, start_batch=5))
two = iter(devices.distribute_dataset(strategy, args, start_batch=5))
same = []
for _ in range(8):  # crosses the epoch boundary (96 images, 6 batches per epoch)
    parts = strategy.experimental_local_results(next(two))
    same.append(bool(np.array_equal(np.concatenate([p.numpy() for p in parts]), next(one).numpy())))
result["global_batches_equal"] = same
result["slice_shapes"] = [list(p.shape) for p in parts]
print(json.dumps(result))
'''


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT)


def _mirrored(tiny_fashion, tmp_path, mains, checks, capfd=None):
    env = dict(_env(), REFUSALS=json.dumps([extra for extra, _ in REFUSALS]))
    proc = subprocess.run([sys.executable, "-c", MIRRORED, tiny_fashion, str(tmp_path), json.dumps(TINY), mains,
                           checks], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _assert_trained_resumed_sampled(r):
    assert r["replicas"] == 2 and r["strategy"] == "mirrored", r
    assert r["ckpt"].endswith("ckpt-3") and r["grid"] and r["finite"], r
    assert r["steps"] == [1, 2, 3], r  # trained 2 steps, resumed for the third, history written once


REFUSALS = [(["--batch_size", "15"], "does not split evenly over the 2 devices"),
            (["--xla"], "--xla compiles one device's train step")]


def test_two_devices_refuse_and_keep_every_copy_in_sync(tiny_fashion, tmp_path):
    # One TensorFlow start-up on two logical devices: both refusals, and one traced train step of every script (the
    # scripts' main() end to end on two devices is the slow test below).
    out, stderr = _mirrored(tiny_fashion, tmp_path, "", "checks")
    messages = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert out["refusals"] == [2, 2] and len(messages) == 2 and not out["refused_dirs"], stderr[-2000:]
    for (_, words), message in zip(REFUSALS, messages):
        assert words in message, message
    for variant in ("dcgan", "wgan", "wgan_gp"):
        r = out[variant]
        assert r["copies"] == 2 and r["in_sync"], r
        # The logged values cross the devices once per generator step, not once per value and critic update.
        assert r["reduces"] == 1, r
    assert out["wgan"]["max_critic_weight"] <= 0.01 + 1e-7
    assert out["z_differ"]
    assert out["global_batches_equal"] == [True] * 8 and out["slice_shapes"] == [[8, 28, 28, 1]] * 2


@pytest.mark.slow  # about 40 s
def test_every_script_trains_resumes_and_samples_on_two_devices(tiny_fashion, tmp_path):
    out, _ = _mirrored(tiny_fashion, tmp_path, "dcgan,wgan,wgan_gp", "")
    for variant in ("dcgan", "wgan", "wgan_gp"):
        _assert_trained_resumed_sampled(out[variant])


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # two workers also train, save and resume in the default suite's stop test below
def test_two_worker_run_on_localhost_leaves_a_checkpoint_sample_py_restores(tiny_fashion, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    run_dir, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    procs = []
    for index in range(2):
        env = dict(_env(), TMPDIR=str(scratch),
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "dcgan.py"), "--strategy", "multi_worker", "--data_dir", tiny_fashion,
             *TINY, "--steps", "3", "--ckpt_every", "2", "--sample_every", "2", "--out_dir", str(run_dir)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["strategy"] == "multi_worker" and config["replicas"] == 2
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith("ckpt-3")
    assert sorted(os.listdir(run_dir / "samples")) == ["step_000002.png", "step_000003.png"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # the chief alone writes the log
    assert os.listdir(scratch) == []  # the other worker's checkpoint directory was removed
    sample = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), str(run_dir), "--out",
                             str(tmp_path / "grid.png")], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert sample.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 0, sample.stderr[-2000:]


# fp16's loss scaling and BatchNorm on two logical devices, against one device (a fresh interpreter, as above).
MECHANISMS = r'''
import json, types
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import common, devices, ops
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = {"skips": []}

# (1) An overflow on one replica only: the optimizers the scripts build (devices.prepare_optimizers) skip the update
# on both copies and halve the scale on both. Then a finite step applies everywhere.
args = types.SimpleNamespace(precision="fp16")
for bad in (0, 1, None):
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
        opt, = devices.prepare_optimizers(args, (keras.optimizers.SGD(0.1), model))
    w = model.trainable_variables[0]
    before = w.numpy().copy()

    @tf.function
    def step():
        def update():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            grad = tf.ones([2, 1]) * opt.dynamic_scale * tf.where(tf.equal(replica, -1 if bad is None else bad),
                                                                  float("inf"), 1.0)
            opt.apply_gradients([(grad, w)])
        strategy.run(update)
    step()
    copies = [x.numpy() for x in strategy.experimental_local_results(w.value)]
    result["skips"].append({"bad": bad, "unchanged": [bool(np.array_equal(c, before)) for c in copies],
                            "finite": bool(all(np.isfinite(c).all() for c in copies)),
                            "iterations": int(opt.iterations.numpy()),
                            "scales": [float(x) for x in strategy.experimental_local_results(opt.dynamic_scale.value)],
                            "initial": float(opt.initial_scale)})

# (4) BatchNorm: the same global batch on one device (fused kernel) and on two (synchronized) gives the same outputs,
# gradients and moving statistics; the two-device layer all-reduces once per call.
x = tf.random.stateless_normal([8, 4, 4, 3], seed=[1, 2]) * 3.0 + 5.0
weights = tf.random.stateless_normal([8, 4, 4, 3], seed=[3, 4])
keras.utils.set_random_seed(0)
one = ops.batch_norm()
one.build(x.shape)
with strategy.scope():
    two = ops.batch_norm()
    two.build(x.shape)
for a, b in zip(one.weights, two.weights):
    b.assign(a.numpy())

def forward(layer, x, w):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * w)
    dx, dgamma, dbeta = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y, dx, dgamma, dbeta

y1, dx1, dg1, db1 = forward(one, x, weights)
halves = strategy.experimental_distribute_values_from_function(lambda ctx: (x[ctx.replica_id_in_sync_group * 4:][:4],
                                                                            weights[ctx.replica_id_in_sync_group * 4:][:4]))
out = tf.function(lambda inputs: strategy.run(lambda xw: forward(two, *xw), args=(inputs,)))(halves)
y2, dx2 = (np.concatenate([t.numpy() for t in strategy.experimental_local_results(v)]) for v in out[:2])
dg2, db2 = (sum(t.numpy() for t in strategy.experimental_local_results(v)) for v in out[2:])  # each replica's share

all_reduce, calls = tf.distribute.ReplicaContext.all_reduce, []
def counting(self, *a, **k):
    calls.append(1)
    return all_reduce(self, *a, **k)
tf.distribute.ReplicaContext.all_reduce = counting
with strategy.scope():
    three = ops.batch_norm()
    three.build(x.shape)
tf.function(lambda inputs: strategy.run(lambda xw: three(xw[0], training=True), args=(inputs,)))(halves)  # one call
tf.distribute.ReplicaContext.all_reduce = all_reduce

def gap(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(a))) + 1e-12))
result["bn"] = {"y": gap(y1, y2), "dx": gap(dx1, dx2), "dgamma": gap(dg1, dg2), "dbeta": gap(db1, db2),
                "moving_mean": gap(one.moving_mean.numpy(), two.moving_mean.numpy()),
                "moving_variance": gap(one.moving_variance.numpy(), two.moving_variance.numpy()),
                "moving_variance_copies_equal": bool(np.array_equal(*[
                    v.numpy() for v in strategy.experimental_local_results(two.moving_variance.value)])),
                "all_reduces_per_call": len(calls) / strategy.num_replicas_in_sync}
print(json.dumps(result))
'''


def test_fp16_skips_together_and_batchnorm_is_one_on_two_devices():
    proc = subprocess.run([sys.executable, "-c", MECHANISMS], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for skip in out["skips"]:
        if skip["bad"] is None:  # finite everywhere: applied on both copies, the scale kept
            assert skip["unchanged"] == [False, False] and skip["iterations"] == 1, skip
            assert skip["scales"] == [skip["initial"]] * 2, skip
        else:  # Inf on replica `bad` alone: skipped on both copies, counted as skipped, the scale halved on both
            assert skip["unchanged"] == [True, True] and skip["finite"] and skip["iterations"] == 0, skip
            assert skip["scales"] == [skip["initial"] / 2] * 2, skip
    bn = out["bn"]
    for key in ("y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"):
        assert bn[key] < 2e-5, (key, bn)  # float32 rounding; the biased moving variance would be off by 1/127
    assert bn["moving_variance_copies_equal"], bn
    assert bn["all_reduces_per_call"] == 1, bn


def _launch_workers(argv, tmp_path, extra_env=None):
    """Two worker processes on 127.0.0.1 running `python ARGV` with TF_CONFIG; their scratch directory."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    scratch = tmp_path / f"scratch-{workers[0].rsplit(':', 1)[1]}"
    scratch.mkdir()
    procs = []
    for index in range(2):
        env = dict(_env(), TMPDIR=str(scratch), **(extra_env or {}),
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs, scratch


def _finish(procs, timeout=300):
    """(status, stdout, stderr) of each process, killing them all if any is not done in `timeout` seconds (a hang)."""
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


# An fp16 step whose gradient overflows on worker 1 only, then a finite one, through the optimizers the scripts build.
FP16_WORKER = r'''
import json, types
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras, numpy as np
import common
import devices
with strategy.scope():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    opt, = devices.prepare_optimizers(types.SimpleNamespace(precision="fp16"), (keras.optimizers.SGD(0.1), model))
w = model.trainable_variables[0]
worker = strategy.cluster_resolver.task_id
trace = [{"w": w.numpy().ravel().tolist()}]

@tf.function
def step(bad):
    def update():
        opt.apply_gradients([(tf.ones([2, 1]) * opt.dynamic_scale * tf.where(bad, float("inf"), 1.0), w)])
    strategy.run(update)
for bad in (worker == 1, False):
    step(tf.constant(bad))
    trace.append({"w": w.numpy().ravel().tolist(), "iterations": int(opt.iterations.numpy()),
                  "scale": float(opt.dynamic_scale.numpy())})
print(json.dumps(trace))
'''


def test_fp16_overflow_on_one_worker_skips_on_both_without_a_hang(tmp_path):
    procs, _ = _launch_workers(["-c", FP16_WORKER], tmp_path)
    results = _finish(procs, timeout=240)
    for status, _, err in results:
        assert status == 0, err[-3000:]
    traces = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert traces[0] == traces[1], traces  # the same weights, update count and scale on both workers
    start, skipped, applied = traces[0]
    assert skipped["w"] == start["w"] and skipped["iterations"] == 0, traces  # skipped on both
    # SGD(0.1) on the gradient 1 summed over the two workers (Keras all-reduces by SUM)
    assert np.allclose(applied["w"], np.array(start["w"]) - 0.2) and applied["iterations"] == 1, traces
    assert skipped["scale"] == applied["scale"] == 2.0 ** 14, traces  # halved once, on both


STOPPED = re.compile(r"^(?:finished|stopped) at step (\d+);", re.M)


def _sigterm_worker_1_after(procs, step):
    """Sends SIGTERM to worker 1 alone (a preempted machine) once it logs a step past `step`; the results."""
    seen = []
    try:
        for line in procs[1].stdout:  # worker 1 logs every step (--log_every 1) as "step N/100000 ..."
            seen.append(line)
            if line.startswith("step ") and int(line.split()[1].split("/")[0]) > step:
                procs[1].send_signal(signal.SIGTERM)
                break
    finally:
        results = _finish(procs)  # kills both if they do not end in time
    results[1] = (results[1][0], "".join(seen) + results[1][1], results[1][2])
    return results


def _two_worker_dcgan(tiny_fashion):
    return [os.path.join(ROOT, "dcgan.py"), "--strategy", "multi_worker", "--data_dir", tiny_fashion, *TINY,
            "--steps", "100000", "--ckpt_every", "100000", "--sample_every", "100000"]


def test_two_workers_stop_together_on_sigterm_to_one(tiny_fashion, tmp_path):
    # SIGTERM to worker 1 only: both stop after the same step with status 0, and the chief's checkpoint holds it.
    run_dir = tmp_path / "run"
    procs, _ = _launch_workers(_two_worker_dcgan(tiny_fashion) + ["--out_dir", str(run_dir)], tmp_path)
    steps = []
    for status, out, err in _sigterm_worker_1_after(procs, 2):
        assert status == 0, err[-3000:]
        steps.append(int(STOPPED.search(out).group(1)))
    assert steps[0] == steps[1] > 2, steps
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith(f"ckpt-{steps[0]}")


@pytest.mark.slow  # about 18 s; the SIGTERM case alone is the test above
def test_two_workers_stop_together_on_the_time_budget_and_on_sigterm_to_one(tiny_fashion, tmp_path):
    run_dir = tmp_path / "run"
    base = _two_worker_dcgan(tiny_fashion)
    # (1) --minutes: the chief's training clock runs out; both workers stop after the same step, the chief saves it.
    procs, _ = _launch_workers(base + ["--minutes", "0.05", "--out_dir", str(run_dir)], tmp_path)
    results = _finish(procs)
    steps = []
    for status, out, err in results:
        assert status == 0 and STOPPED.search(out), err[-3000:]
        steps.append(int(STOPPED.search(out).group(1)))
    assert steps[0] == steps[1] > 0, steps
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith(f"ckpt-{steps[0]}")
    first = steps[0]

    # (2) --resume continues it; SIGTERM to worker 1 alone (a preempted machine) once it has trained past `first`:
    # both stop after the same later step with status 0, and the chief's checkpoint holds that step.
    procs, _ = _launch_workers([base[0], "--resume", str(run_dir), "--minutes", "0"], tmp_path)
    steps = []
    for status, out, err in _sigterm_worker_1_after(procs, first + 2):
        assert status == 0, err[-3000:]
        assert f"resumed from {run_dir}/ckpt/ckpt-{first} at step {first}" in out, out[-2000:]
        steps.append(int(STOPPED.search(out).group(1)))
    assert steps[0] == steps[1] > first + 2, steps
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith(f"ckpt-{steps[0]}")

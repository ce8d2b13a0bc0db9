"""--steps_per_call K runs K generator steps inside one compiled call and changes nothing else: a --deterministic run
with K = 1 and one with K = 7 end bit-identical (weights, optimizer slots, the step counter and data position, the
random generator, metrics.jsonl apart from its timing keys), and so does a resume that changes K."""
import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import dcgan
import training
import wgan
import wgan_gp
from conftest import cli_in_process

TINY = ["--image_size", "16", "--width", "4", "--z_dim", "8", "--batch_size", "8", "--deterministic",
        "--ckpt_every", "10", "--sample_every", "15", "--log_every", "5"]
TIMING = {"steps_per_sec", "images_per_sec", "train_seconds"}


def _train(module, data_dir, out, capsys, *flags):
    code, _, err = cli_in_process(module.main, ["--data_dir", data_dir, *TINY, "--out_dir", out, *flags], capsys)
    assert code == 0, err


def _state(run_dir, step):
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "ckpt", f"ckpt-{step}"))
    # Training time is a clock and save_counter counts saves, not state; the object graph names Keras' layers,
    # which count up within a process.
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(("train_seconds", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def _log(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def _assert_same_run(a, b, step):
    state_a, state_b = _state(a, step), _state(b, step)
    assert state_a.keys() == state_b.keys() and len(state_a) > 20
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name], err_msg=name)
    # A run that ends at a step that is not a log step logs that step too (the resumed run's step 12).
    logged_a, logged_b = ([row for row in _log(d) if row["step"] % 5 == 0] for d in (a, b))
    assert logged_a == logged_b and len(logged_a) == step // 5


def test_wgan_k1_k7_and_a_resume_that_changes_k_are_bit_identical(tiny_fashion, tmp_path, capsys):
    """WGAN: its warm-up (100 critic updates for the first 25 steps) is computed inside the call from the step."""
    one, seven, resumed = (str(tmp_path / name) for name in ("k1", "k7", "resumed"))
    _train(wgan, tiny_fashion, one, capsys, "--steps", "30", "--steps_per_call", "1")
    _train(wgan, tiny_fashion, seven, capsys, "--steps", "30", "--steps_per_call", "7")
    _assert_same_run(one, seven, 30)
    _train(wgan, tiny_fashion, resumed, capsys, "--steps", "12", "--steps_per_call", "7")
    code, _, err = cli_in_process(wgan.main, ["--resume", resumed, "--data_dir", tiny_fashion, "--steps", "30",
                                              "--steps_per_call", "3"], capsys)
    assert code == 0, err
    _assert_same_run(one, resumed, 30)


def test_dcgan_k1_and_k4_are_bit_identical(tiny_fashion, tmp_path, capsys):
    one, four = str(tmp_path / "k1"), str(tmp_path / "k4")
    _train(dcgan, tiny_fashion, one, capsys, "--steps", "20", "--steps_per_call", "1")
    _train(dcgan, tiny_fashion, four, capsys, "--steps", "20", "--steps_per_call", "4")
    _assert_same_run(one, four, 20)


@pytest.mark.parametrize("module, parts", [(dcgan, ["step"]), (wgan, ["critic_step", "generator_step"]),
                                           (wgan_gp, ["critic_step", "generator_step"])])
def test_an_xla_step_compiles_once_for_every_call(module, parts, tiny_fashion, tmp_path):
    """With --xla, dcgan.py compiles its whole step (both updates and the bookkeeping) into one XLA computation, and
    wgan.py and wgan_gp.py each critic update and the generator update with the bookkeeping; each is compiled once:
    a slice at a computed index (values[index] in Progress) makes XLA compile anew at every call. XLA writes each
    computation it compiles to --xla_dump_to, so six calls (WGAN's in its warm-up) must leave one of each."""
    dump = tmp_path / "xla"
    env = {**os.environ, "XLA_FLAGS": f"--xla_dump_to={dump}"}
    flags = ["--data_dir", tiny_fashion, *TINY, "--xla", "--steps", "6", "--steps_per_call", "1", "--log_every", "2",
             "--out_dir", str(tmp_path / "run")]
    done = subprocess.run([sys.executable, module.__file__, *flags], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # module_0237.a_inference_critic_step_2127__.1840.before_optimizations.txt: one per compilation
    found = (re.match(r"module_\d+\.a_inference_(\w+?)_\d+__\..*before_optimizations", n) for n in os.listdir(dump))
    compiled = sorted(m.group(1) for m in found if m)
    assert compiled == sorted(parts), compiled


class _Args:
    steps, log_every, sample_every, ckpt_every, eval_every, steps_per_call, minutes = 100, 10, 25, 40, 0, 8, 0


@pytest.mark.parametrize("per_call", [1, 3, 8, 1000])
def test_calls_end_at_every_log_sample_and_checkpoint_step(per_call):
    loop = training.Loop.__new__(training.Loop)  # the call-cutting logic alone, no run behind it
    loop.args, loop.evaluate, loop.step, loop.save_pending, loop.per_call = _Args, None, 0, False, per_call
    ends = []
    while loop.step < _Args.steps:
        loop.step += min(per_call, loop._to_next_sync())
        ends.append(loop.step)
    due = {s for s in range(1, 101) if s % 10 == 0 or s % 25 == 0 or s % 40 == 0}
    assert due <= set(ends) and ends[-1] == 100
    assert all(b - a <= per_call for a, b in zip([0] + ends, ends))


def test_a_call_is_cut_to_about_a_second_at_the_last_calls_pace():
    """So that Ctrl-C and --minutes act within about a second on a slow CPU or in WGAN's warm-up."""
    loop = training.Loop.__new__(training.Loop)
    loop.run, loop.per_call = types.SimpleNamespace(workers=1), 50
    loop.step_seconds = None
    assert loop._affordable() == 1  # nothing timed yet (the first call traces)
    loop.step_seconds = training.CALL_SECONDS / 3.5
    assert loop._affordable() == 3
    loop.step_seconds = 10 * training.CALL_SECONDS  # one step takes longer than a call should: still one step
    assert loop._affordable() == 1
    loop.step_seconds = 1e-6
    assert loop._affordable() >= 1000
    loop.run.workers, loop.step_seconds = 2, 10 * training.CALL_SECONDS  # workers: the same calls on every one
    assert loop._affordable() == 50


@pytest.mark.parametrize("count, fewest, as_tensor", [(3, 3, False), (5, 5, False), (8, 8, False), (100, 5, True),
                                                       (5, 5, True), (7, 2, True), (4, None, False)])
def test_critic_updates_are_written_out_up_to_the_papers_n_critic_and_loop_over_the_rest(count, fewest, as_tensor):
    """training.repeat_update: `count` updates on consecutive batches, the last one's values returned; the first
    min(fewest, WRITTEN_OUT) written out in the graph (one trace each), any more in one loop (one trace)."""
    iterator = iter(tf.data.Dataset.range(1000))
    done, traces = tf.Variable(0, dtype=tf.int64), []

    def update(batch):
        traces.append(batch)
        done.assign_add(1)
        return {"batch": batch}

    @tf.function
    def step(n):
        return training.repeat_update(update, iterator, n, fewest)

    last = step(tf.constant(count) if as_tensor else count)
    written = min(count if fewest is None else fewest, training.WRITTEN_OUT)  # a number is its own fewest
    assert int(done.numpy()) == count and int(last["batch"].numpy()) == count - 1
    assert len(traces) == written + (1 if as_tensor or count > written else 0)
    assert int(next(iterator).numpy()) == count  # no batch drawn beyond the updates'

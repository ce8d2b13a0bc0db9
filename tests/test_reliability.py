"""What survives what: NaN, kill -9, errors mid-run, failed saves, bad flags, and a resume's history."""
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import common
import training
import data
import dcgan
import wgan
import wgan_gp
from conftest import ROOT
from test_train import TINY, checkpoint_values, read_metrics, run_script

SCRIPTS = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp}


def _all_checkpoints_finite(run_dir):
    paths = sorted(glob.glob(os.path.join(run_dir, "ckpt", "ckpt-*.index")))
    return [p[:-6] for p in paths], all(  # best_score is inf until an evaluation: not training state
        np.isfinite(v).all() for p in paths for k, v in checkpoint_values(p[:-6]).items()
        if np.issubdtype(np.asarray(v).dtype, np.floating) and not k.startswith("best_score"))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_non_finite_run_stops_with_exit_3_and_saves_nothing_non_finite(name, tiny_fashion, tmp_path, monkeypatch,
                                                                       capsys):
    real_make_dataset = data.make_dataset

    def nan_from_batch_5(*args, **kwargs):  # real batches 0-4, then NaN images
        return real_make_dataset(*args, **kwargs).enumerate().map(
            lambda i, x: tf.where(i >= 5, tf.fill(tf.shape(x), np.nan), x))

    monkeypatch.setattr(data, "make_dataset", nan_from_batch_5)
    run_dir = tmp_path / "run"
    argv = ["--data_dir", tiny_fashion, *TINY, "--steps", "20", "--ckpt_every", "1", "--out_dir", str(run_dir)]
    with pytest.raises(SystemExit) as e:
        common.cli(lambda: SCRIPTS[name].main(argv + ["--n_critic", "1"] * (name != "dcgan")
                                              + ["--no-critic_warmup"] * (name == "wgan")))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 3, last
    assert last == ("error: At step 6 critic_loss became nan, so training stopped. Nothing non-finite was saved; "
                    "see docs/reliability.md for what to try."), last
    paths, finite = _all_checkpoints_finite(str(run_dir))
    assert [p.rsplit("-", 1)[1] for p in paths] == ["3", "4", "5"] and finite  # the last 3 of steps 1-5, all finite


def test_fp16_that_skips_every_update_for_good_stops_with_exit_3_and_saves_nothing_after_the_last_good_step(
        tiny_fashion, tmp_path, monkeypatch, capsys):
    real_make_dataset = data.make_dataset

    def nan_from_batch_5(*args, **kwargs):  # real batches 0-4, then NaN images: every critic gradient is NaN
        return real_make_dataset(*args, **kwargs).enumerate().map(
            lambda i, x: tf.where(i >= 5, tf.fill(tf.shape(x), np.nan), x))

    monkeypatch.setattr(data, "make_dataset", nan_from_batch_5)
    run_dir = tmp_path / "run"
    argv = ["--data_dir", tiny_fashion, *TINY, "--precision", "fp16", "--steps", "40", "--ckpt_every", "1",
            "--out_dir", str(run_dir)]
    with pytest.raises(SystemExit) as e:
        common.cli(lambda: dcgan.main(argv))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    # fp16's scaler skips each NaN update of the critic and halves its scale, 2^15 at step 6 -> 0.5 at step 21
    # (20 or earlier if the initial scale overflowed once before): the NaN guard does not fire (the skips are the
    # scaler working), the stuck-scale rule does.
    assert e.value.code == 3, last
    stop = re.match(r"error: At step (\d+) fp16 loss scaling had lowered its loss scale to 0.5 \(the gradients "
                    r"overflow float16 even scaled down\), so training stopped; start a new run with --precision "
                    r"bf16 or fp32, or a lower --lr\.", last)
    assert stop and 16 <= int(stop.group(1)) <= 21, last
    paths, finite = _all_checkpoints_finite(str(run_dir))
    # Steps 1-5 were whole; from step 6 on every periodic save waited for a whole step, which never came.
    assert [p.rsplit("-", 1)[1] for p in paths] == ["3", "4", "5"] and finite


def test_a_second_ctrl_c_saves_the_step_and_ends_in_one_sentence(tiny_fashion, tmp_path, monkeypatch, capsys):
    real_save_samples = training.save_samples

    def two_ctrl_c(generator, noise, run_dir, step, *args):  # both land while step 2's grid is written
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_save_samples(generator, noise, run_dir, step, *args)

    monkeypatch.setattr(training, "save_samples", two_ctrl_c)
    run_dir = tmp_path / "run"

    def found(signum, frame):  # whatever the run finds in place (a background job or nohup: SIG_IGN) it gives back
        raise AssertionError("the run's own handler should have taken the signal")
    previous = signal.signal(signal.SIGINT, found)
    try:
        with pytest.raises(SystemExit) as e:
            common.cli(lambda: dcgan.main(["--data_dir", tiny_fashion, *TINY, "--steps", "5", "--sample_every", "1",
                                           "--out_dir", str(run_dir)]))
        handler_after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert e.value.code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-2:] == [
        "saved the checkpoint of step 2 before stopping on the error below.",
        "error: interrupted; a training run continues from its newest checkpoint with --resume RUN_DIR."], err
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith("ckpt-2")
    assert handler_after is found  # the handler found before the run is given back


def test_run_without_a_checkpoint_resumes_from_step_0(tiny_fashion, tmp_path):
    argv = ["--data_dir", tiny_fashion, *TINY, "--deterministic", "--steps", "3"]
    dcgan.main(argv + ["--out_dir", str(tmp_path / "straight")])
    dcgan.main(argv + ["--out_dir", str(tmp_path / "killed")])
    for path in glob.glob(str(tmp_path / "killed" / "ckpt" / "*")):  # as if killed before its first checkpoint
        os.remove(path)
    os.remove(tmp_path / "killed" / "metrics.jsonl")
    dcgan.main(["--resume", str(tmp_path / "killed")])
    a, b = (checkpoint_values(str(tmp_path / d / "ckpt" / "ckpt-3")) for d in ("straight", "killed"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_an_error_mid_run_saves_the_last_completed_step(tiny_fashion, tmp_path, monkeypatch):
    real_save = training.save_samples

    def disk_full_at_step_3(generator, noise, run_dir, step, logger=None):
        if step == 3:
            raise OSError(28, "No space left on device", os.path.join(run_dir, "samples", "step_000003.png"))
        return real_save(generator, noise, run_dir, step, logger)

    monkeypatch.setattr(training, "save_samples", disk_full_at_step_3)
    run_dir = tmp_path / "run"
    with pytest.raises(OSError, match="No space"):
        wgan.main(["--data_dir", tiny_fashion, *TINY, "--steps", "5", "--sample_every", "1", "--ckpt_every", "100",
                   "--out_dir", str(run_dir)])
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith("ckpt-3")  # no periodic save had happened
    monkeypatch.setattr(training, "save_samples", real_save)
    wgan.main(["--resume", str(run_dir)])
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3, 4, 5]


def test_a_failed_save_is_one_sentence_and_keeps_the_earlier_checkpoints(tiny_fashion, tmp_path, monkeypatch):
    real_save = tf.train.CheckpointManager.save

    def fails_at_4(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == 4:  # as TF's writer reports a full disk
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", fails_at_4)
    run_dir = tmp_path / "run"
    with pytest.raises(common.RunError) as e:
        dcgan.main(["--data_dir", tiny_fashion, *TINY, "--steps", "6", "--ckpt_every", "2", "--out_dir", str(run_dir)])
    message = str(e.value)
    assert "cannot save the checkpoint of step 4" in message and "ckpt-2" in message and "--resume" in message
    assert len(message.splitlines()) == 1
    common.Checkpoints(str(run_dir), 3, value=tf.Variable(0.0))  # the directory is still a valid checkpoint dir
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith("ckpt-2")
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)
    dcgan.main(["--resume", str(run_dir)])  # ckpt-2 restores and the run continues
    assert tf.train.latest_checkpoint(str(run_dir / "ckpt")).endswith("ckpt-6")


def test_best_score_survives_a_crash_after_the_best_checkpoint(tmp_path):
    value = tf.Variable(0.0)
    ckpt = common.Checkpoints(str(tmp_path), 3, value=value)
    ckpt.save(1)  # periodic checkpoint, best score still inf
    assert ckpt.save_if_best(2, 1.5)  # ckpt_best/ holds 1.5 ... and the run dies before the next periodic save
    again = common.Checkpoints(str(tmp_path), 3, value=tf.Variable(0.0))
    assert again.restore_latest().endswith("ckpt-1")
    assert float(again.best_score) == 1.5 and not again.save_if_best(3, 2.0)
    assert common.checkpoint_path(str(tmp_path), best=True).endswith("ckpt-2")


@pytest.mark.parametrize("name, flags, words", [
    ("wgan", ["--n_critic", "0"], "--n_critic must be at least 1"),
    ("wgan", ["--clip", "0"], "--clip must be positive"),
    ("wgan", ["--clip", "-0.01"], "--clip must be positive"),
    ("wgan_gp", ["--gp_weight", "-1"], "--gp_weight must be 0 or positive"),
    ("wgan_gp", ["--gen_batch_multiple", "0"], "--gen_batch_multiple must be at least 1"),
    ("dcgan", ["--eval_every", "10", "--eval_samples", "1"], "--eval_samples 1 is too few"),
    ("dcgan", ["--image_size", "36"], "--image_size 36 does not fit"),
    ("dcgan", ["--image_size", "100"], "--image_size 100 does not fit"),
    ("dcgan", ["--ckpt_every", "0"], "--ckpt_every must be at least 1"),
    ("dcgan", ["--log_every", "-5"], "--log_every must be at least 1"),
    ("dcgan", ["--eval_every", "-1"], "--eval_every must be 0 (off) or positive"),
    ("dcgan", ["--minutes", "-1"], "--minutes must be 0 (off) or positive"),
    ("dcgan", ["--z_dim", "0"], "--z_dim must be at least 1"),
    ("dcgan", ["--width", "0"], "--width must be at least 1"),
    ("dcgan", ["--lr", "0"], "--lr must be positive"),
    ("dcgan", ["--lr", "nan"], "--lr must be positive"),
    ("dcgan", ["--beta1", "1"], "--beta1 must be in [0, 1)"),
    ("wgan_gp", ["--beta2", "-0.1"], "--beta2 must be in [0, 1)"),
    ("dcgan", ["--seed", "-1"], "--seed must be in [0, 2^31)"),
])
def test_bad_flags_are_refused_in_one_sentence_before_anything_is_written(name, flags, words, tmp_path, tiny_fashion):
    with pytest.raises(common.RunError) as e:  # (tiny data and one step, in case a flag slipped through)
        SCRIPTS[name].main(["--data_dir", tiny_fashion, *TINY[:-2], "--steps", "1", "--out_dir",
                            str(tmp_path / "run")] + flags)
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_resumed_flags_are_validated_too(tiny_fashion, tmp_path):
    run_dir = str(tmp_path / "run")
    dcgan.main(["--data_dir", tiny_fashion, *TINY, "--steps", "1", "--out_dir", run_dir])
    with pytest.raises(common.RunError, match="--ckpt_every must be at least 1"):
        dcgan.main(["--resume", run_dir, "--ckpt_every", "0"])


def _tensorboard_steps(run_dir, tag):
    from tensorflow.core.util import event_pb2
    steps = []
    for path in glob.glob(os.path.join(run_dir, "logs", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return sorted(steps)


def _kill_and_resume(script, argv, run_dir, moments, rng):
    """Start (or resume) the run and SIGKILL it at each moment; then let the last resume finish."""
    kills = []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    for i, moment in enumerate(moments + [None]):
        cmd = [sys.executable, os.path.join(ROOT, script)] + (argv if i == 0 else ["--resume", run_dir])
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if moment is not None:
            deadline = time.monotonic() + 120
            if moment == "before_first_checkpoint":  # config.json written, no checkpoint yet
                while not os.path.exists(os.path.join(run_dir, "config.json")) and time.monotonic() < deadline:
                    time.sleep(0.005)
            else:  # a random moment once training runs: with a checkpoint every step, often inside a save
                start = len(glob.glob(os.path.join(run_dir, "ckpt", "*.index")))
                while len(glob.glob(os.path.join(run_dir, "ckpt", "*.index"))) <= start and \
                        proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.3))
            proc.send_signal(signal.SIGKILL)
            kills.append(moment)
        _, err = proc.communicate(timeout=300)
        if moment is None:
            assert proc.returncode == 0, err[-3000:]
    return kills


@pytest.mark.slow  # 30-55 s per variant on 2 cores: python -m pytest -m slow
@pytest.mark.parametrize("name", ["wgan_gp", "dcgan", "wgan"])
def test_kill_9_at_random_moments_loses_nothing_and_resumes_bit_for_bit(name, tiny_fashion, tmp_path):
    rng = random.Random(0)
    steps = 8
    argv = ["--data_dir", tiny_fashion, *TINY, "--deterministic", "--steps", steps, "--ckpt_every", 1,
            "--sample_every", 3] + (["--n_critic", 2] if name != "dcgan" else [])
    argv = [str(a) for a in argv]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    run_script(f"{name}.py", *argv, "--out_dir", straight)
    kills = _kill_and_resume(f"{name}.py", argv + ["--out_dir", killed], killed,
                             ["before_first_checkpoint", "random", "random", "random"], rng)
    assert len(kills) == 4
    a = checkpoint_values(os.path.join(straight, "ckpt", f"ckpt-{steps}"))
    b = checkpoint_values(os.path.join(killed, "ckpt", f"ckpt-{steps}"))
    assert a.keys() == b.keys() and len(a) > 20
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # The replayed steps were logged once: metrics.jsonl and TensorBoard hold each step a single time.
    assert [r["step"] for r in read_metrics(killed)] == list(range(1, steps + 1))
    assert _tensorboard_steps(killed, "critic_loss") == list(range(1, steps + 1))
    with open(os.path.join(killed, "config.json")) as f:
        assert len(json.load(f)["resumed"]) == 4


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tiny_fashion, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["--data_dir", tiny_fashion, *TINY, "--deterministic", "--ckpt_every", "2"]
    dcgan.main(argv + ["--steps", "6", "--out_dir", str(tmp_path / "straight")])
    dcgan.main(argv + ["--steps", "4", "--out_dir", str(run_dir)])
    data_file = run_dir / "ckpt" / "ckpt-4.data-00000-of-00001"
    data_file.write_bytes(data_file.read_bytes()[:100])  # truncated, as by a failing disk
    dcgan.main(["--resume", str(run_dir), "--steps", "6"])
    out = capsys.readouterr()
    assert "ckpt-4 cannot be read" in out.err and "resumed from" in out.err and "ckpt-2" in out.out
    a, b = (checkpoint_values(str(d / "ckpt" / "ckpt-6")) for d in (tmp_path / "straight", run_dir))
    assert all(np.array_equal(a[k], b[k]) for k in a)  # replayed steps 3-6 exactly
    # ... and step 4 was saved again, whole: the damaged file is gone.
    a, b = (checkpoint_values(str(d / "ckpt" / "ckpt-4")) for d in (tmp_path / "straight", run_dir))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_by_a_relative_run_directory(tiny_fashion, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as a user types it: python dcgan.py --resume runs/dcgan-...
    argv = ["--data_dir", tiny_fashion, *TINY, "--deterministic", "--ckpt_every", "2"]
    dcgan.main(argv + ["--steps", "2", "--out_dir", os.path.join("runs", "r")])
    dcgan.main(["--resume", os.path.join("runs", "r"), "--steps", "3"])
    assert tf.train.latest_checkpoint(os.path.join("runs", "r", "ckpt")).endswith("ckpt-3")


def test_finite_weight_check_names_the_first_bad_variable():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="first"),
                              keras.layers.Dense(1, name="last")])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    common.check_finite_weights(7, {"critic": model, "critic_optimizer": optimizer})  # all finite: no error
    model.get_layer("last").bias.assign([np.inf])
    with pytest.raises(common.NonFiniteError, match=r"^At step 7 critic's variable \S*last/bias holds NaN or Inf"):
        common.check_finite_weights(7, {"critic": model, "critic_optimizer": optimizer})
    model.get_layer("last").bias.assign([0.0])
    optimizer.variables[-1].assign(tf.fill(optimizer.variables[-1].shape, np.nan))
    with pytest.raises(common.NonFiniteError, match="critic_optimizer's variable"):
        common.check_finite_weights(7, {"critic": model, "critic_optimizer": optimizer})

"""Run directories and configs someone else hands you: a run never takes over a folder it did not make, two runs
never share one, and a hand-edited or foreign config.json ends in one sentence naming the key, with exit status 2."""
import json
import os
import shutil
import types

import pytest

import common
import dcgan
import devices
import sample
from conftest import ROOT, cli_in_process

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "dcgan_run")
TINY = ["--image_size", "16", "--width", "4", "--z_dim", "8", "--batch_size", "8", "--log_every", "1"]


def _snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_runs_started_in_the_same_second_get_folders_of_their_own(tiny_fashion, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, "_now", lambda: "20261204-120000")  # both start in the same second
    for seed in (1, 2):
        code, _, err = cli_in_process(dcgan.main, ["--data_dir", tiny_fashion, *TINY, "--steps", 1, "--seed", seed],
                                      capsys)
        assert code == 0, err
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 2 and all(r.startswith("dcgan-fashion_mnist-20261204-120000-") for r in runs)
    seeds = [json.load(open(tmp_path / "runs" / r / "config.json"))["seed"] for r in runs]
    assert sorted(seeds) == [1, 2]


def test_of_two_runs_given_one_folder_exactly_one_claims_it(tmp_path):
    """Both pass the start-up check (no config.json yet); the exclusive write of config.json decides."""
    out = str(tmp_path / "run")
    first, second = (common.Run(dcgan.parse_args(["--out_dir", out, "--seed", str(s)]), "dcgan", devices.make_strategy(
        types.SimpleNamespace(strategy="one", batch_size=128, xla=False))) for s in (1, 2))
    first.save_config()
    with pytest.raises(common.RunError, match="claimed by another run"):
        second.save_config()
    assert json.load(open(os.path.join(out, "config.json")))["seed"] == 1
    assert os.listdir(out) == ["config.json"]  # no temporary file left behind


@pytest.mark.parametrize("kind", ["files", "a file"])
def test_a_new_run_refuses_an_out_dir_that_holds_other_things_and_leaves_it_untouched(tiny_fashion, tmp_path,
                                                                                     capsys, kind):
    target = tmp_path / "somebody_elses"
    if kind == "files":
        (target / "logs").mkdir(parents=True)
        (target / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
        (target / "logs" / "events.out.tfevents.1.host.1.0.v2").write_bytes(b"\x00" * 64)
        before = _snapshot(target)
    else:
        target.write_text("not a folder")
    code, _, err = cli_in_process(dcgan.main, ["--data_dir", tiny_fashion, *TINY, "--steps", 1,
                                               "--out_dir", target], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(target) in err and "--out_dir" in err, err
    if kind == "files":
        assert _snapshot(target) == before
    else:
        assert target.read_text() == "not a folder"


def test_an_empty_out_dir_is_used(tiny_fashion, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = cli_in_process(dcgan.main, ["--data_dir", tiny_fashion, *TINY, "--steps", 1,
                                               "--out_dir", tmp_path / "empty"], capsys)
    assert code == 0, err
    assert os.path.isfile(tmp_path / "empty" / "config.json")


@pytest.mark.parametrize("key, value", [
    ("arch", "bogus"), ("first_bn", "x"), ("z_dim", "16"), ("z_dim", -3), ("z_dim", 2.5), ("z_dim", True),
    ("image_size", 0), ("image_size", 36), ("channels", 2), ("width", None), ("fit", ["resize"]), ("lr", "fast"),
    ("dataset", "imagenet"), ("eval_extra", "classes"), ("seed", -1), ("beta1", 1.5)])
def test_an_edited_config_is_refused_in_one_sentence_naming_the_key(tmp_path, capsys, key, value):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    config = json.load(open(run_dir / "config.json"))
    config[key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    before = _snapshot(run_dir)
    code, out, err = cli_in_process(sample.main, [run_dir, "--out", tmp_path / "grid.png"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"holds {key} " in lines[0] and str(run_dir / "config.json") in lines[0]
    assert _snapshot(run_dir) == before and not (tmp_path / "grid.png").exists()


def test_the_same_refusal_when_resuming(tiny_fashion, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    config = json.load(open(run_dir / "config.json"))
    config["z_dim"] = "8"
    (run_dir / "config.json").write_text(json.dumps(config))
    before = _snapshot(run_dir)
    code, _, err = cli_in_process(dcgan.main, ["--resume", run_dir, "--data_dir", tiny_fashion], capsys)
    assert code == 2 and "holds z_dim " in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(run_dir) == before


def test_a_huge_config_is_not_read(tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    with open(run_dir / "config.json", "a") as f:
        f.write(" " * (common.CONFIG_MAX_BYTES + 1))
    code, _, err = cli_in_process(sample.main, [run_dir], capsys)
    assert code == 2 and "cannot be read as JSON" in err and len(err.strip().splitlines()) == 1, err


def test_the_saved_fixture_passes_the_checks():
    assert common.config_problem(common.read_config(FIXTURE)) is None


@pytest.mark.parametrize("tf_config, what", [
    ("{not json", "not valid JSON"), ("[]", "cluster"), ('{"cluster": {"worker": "localhost:1"}}', "cluster"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "chief", "index": 0}}', "task"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}', "task"), ("", "needs")])
def test_bad_tf_config_is_one_sentence(monkeypatch, tf_config, what):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    args = types.SimpleNamespace(strategy="multi_worker", batch_size=8, xla=False)
    with pytest.raises(common.RunError, match=what) as e:
        devices.make_strategy(args)
    assert "TF_CONFIG" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mode", [["--num", "4", "--format", "npz"], ["--interpolate", "2", "--gif"]])
def test_sample_outputs_never_write_through_a_planted_link(tmp_path, capsys, monkeypatch, mode):
    """sample.py's temporary output is created exclusively under a random name: a link planted where the name can be
    guessed (here made guessable on purpose) is refused, not followed, and the file it points to is untouched."""
    import files
    victim = tmp_path / "victim"
    victim.write_text("precious")
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: "0" * (2 * n))
    out = tmp_path / ("out.npz" if "npz" in mode else "out.gif")
    os.symlink(victim, tmp_path / f".{out.name}.{'0' * 16}.tmp")
    os.symlink(victim, tmp_path / f".tmp{os.getpid()}-{out.name}")  # a pid-based name, the easiest to guess
    code, _, err = cli_in_process(sample.main, [FIXTURE, *mode, "--out", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(out) in err, err
    assert victim.read_text() == "precious" and not out.exists()

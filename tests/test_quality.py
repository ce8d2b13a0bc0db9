"""Tests for experiments/quality.py: the run specs and their refusals, the evaluation cadence, and the CSV, plot and
grid written from synthetic run directories (fake metrics.jsonl and sample grids; nothing trains here except in
the slow end-to-end test)."""
import csv
import json
import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import quality  # noqa: E402


# -------------------------------------------------------------------------------------------- synthetic runs
def fake_run(run_dir, variant="dcgan", steps=100, eval_every=20, log_every=10, seconds_per_step=0.5, fd=400.0,
             eval_has_time=False, grid_seed=0):
    """A finished run as the scripts leave it: config.json, metrics.jsonl (log lines with train_seconds and
    losses every log_every steps and at the end, eval lines every eval_every steps), and 8x8 sample grids of
    4x4 images. The score falls as fd / step. Returns the final grid as an array."""
    os.makedirs(os.path.join(run_dir, "samples"))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"variant": variant, "seed": 0, "n_critic": 5}, f)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for step in range(1, steps + 1):
            t = step * seconds_per_step
            if step % log_every == 0 or step == steps:
                values = {"critic_loss": 1.0 / step, "generator_loss": 2.0 + step, "steps_per_sec": 2.0,
                          "train_seconds": t}
                if variant == "wgan_gp":
                    values.update(wasserstein=10.0 / step, gradient_penalty=0.1)
                f.write(json.dumps({"step": step, **values}) + "\n")
            if step % eval_every == 0:
                f.write(json.dumps({"step": step, "eval/classifier_fd": fd / step,
                                    **({"train_seconds": t} if eval_has_time else {})}) + "\n")
        f.write('{"step": 10')  # a line torn by a kill
    rng = np.random.default_rng(grid_seed)
    grids = {s: rng.integers(0, 256, (8 * 4 + 14, 8 * 4 + 14), dtype=np.uint8) for s in (steps // 2, steps)}
    for step, grid in grids.items():
        Image.fromarray(grid).save(os.path.join(run_dir, "samples", f"step_{step:06d}.png"))
    return grids[steps]


def fake_experiment(out_dir):
    """An output directory of quality.py holding a dcgan run and a wgan_gp run."""
    grids = [fake_run(os.path.join(out_dir, "dcgan"), steps=100, eval_every=20),
             fake_run(os.path.join(out_dir, "wgan_gp"), "wgan_gp", steps=45, eval_every=10, log_every=5,
                      seconds_per_step=1.3, fd=900.0, eval_has_time=True, grid_seed=1)]
    runs = [{"label": "dcgan", "variant": "dcgan", "name": "dcgan", "device": "test CPU",
             "final": {"step": 100, "classifier_fd": 4.0}},
            {"label": "wgan_gp --n_critic 5", "variant": "wgan_gp", "name": "wgan_gp", "device": "test CPU",
             "final": {"step": 45, "classifier_fd": 17.5}}]
    quality.write_manifest(out_dir, {"metric": "classifier_fd", "eval_samples": 5000, "runs": runs})
    return grids


# ----------------------------------------------------------------------------------------------- arguments
def test_default_runs_are_the_three_variants_for_ten_minutes():
    args = quality.parse_args([])
    assert [s["variant"] for s in args.run_specs] == ["dcgan", "wgan", "wgan_gp"]
    assert [s["flags"] for s in args.run_specs] == [[], [], []]
    assert args.minutes == 10 and args.steps is None and args.eval_samples == 5000
    assert args.metric == "classifier_fd" and args.out_dir.startswith(os.path.join("runs", "quality-"))


def test_runs_extra_flags_and_labels():
    args = quality.parse_args(["--runs", "dcgan", "dcgan --batch_size 64", "--extra", "--data_dir '/data/x y'"])
    assert [s["label"] for s in args.run_specs] == ["dcgan --data_dir '/data/x y'",
                                                    "dcgan --batch_size 64 --data_dir '/data/x y'"]
    assert args.run_specs[0]["flags"] == ["--data_dir", "/data/x y"]
    assert args.run_specs[1]["flags"] == ["--batch_size", "64", "--data_dir", "/data/x y"]
    assert [s["name"] for s in args.run_specs] == ["dcgan_data_dir_data_x_y", "dcgan_batch_size_64_data_dir_data_x_y"]
    # The docstring's spelling: --variants, --extra and --label, for a run that joins an earlier plot.
    args = quality.parse_args(["--variants", "dcgan", "--extra", "--batch_size 64", "--label", "dcgan-b64",
                               "--steps", "500"])
    spec, = args.run_specs
    assert (spec["label"], spec["name"], spec["flags"]) == ("dcgan-b64", "dcgan-b64", ["--batch_size", "64"])
    assert args.minutes is None and args.steps == 500


def test_own_flags_add_budget_and_evaluation_and_keep_a_runs_log_every():
    args = quality.parse_args(["--runs", "wgan", "wgan --log_every 7", "--minutes", "2"])
    plain, logged = args.run_specs
    flags = quality.own_flags(plain, args, 60, 10)
    assert flags[:4] == ["--minutes", 2.0, "--steps", quality.NO_LIMIT]  # time is the only limit
    assert flags[4:] == ["--eval_every", 60, "--eval_samples", 5000, "--metric", "classifier_fd", "--log_every", 10]
    assert "--log_every" not in quality.own_flags(logged, args, 60, 10)
    args = quality.parse_args(["--variants", "dcgan", "--steps", "300"])
    assert quality.own_flags(args.run_specs[0], args, 30, 10)[:2] == ["--steps", 300]


@pytest.mark.parametrize("argv, message", [
    (["--runs", "gan"], "does not start with a variant"),
    (["--runs", ""], "does not start with a variant"),
    (["--runs", "dcgan --steps 5"], "--steps is set by quality.py"),
    (["--runs", "dcgan --minute 5"], "--minute is set by quality.py"),  # argparse would take the prefix
    (["--runs", "dcgan", "--extra=--out_dir=x"], "--out_dir is set by quality.py"),
    (["--runs", "dcgan --eval_every 5"], "--eval_every is set by quality.py"),
    (["--runs", "dcgan", "wgan", "--label", "a"], "1 --label for 2 runs"),
    (["--runs", "dcgan", "dcgan"], "two runs have the label 'dcgan'"),
    (["--runs", "dcgan", "wgan", "--label", "a b", "a_b"], "two runs have the directory name 'a_b'"),
    (["--runs", "dcgan --data_dir 'x"], "cannot split"),
    (["--minutes", "0"], "--minutes must be positive"),
    (["--steps", "0"], "--steps must be positive"),
    (["--points", "0"], "--points must be positive"),
    (["--eval_samples", "1"], "--eval_samples must be positive (at least 2)"),
    (["--scale", "0"], "--scale must be positive"),
    (["--minutes", "5", "--steps", "5"], "not allowed with argument"),
    (["--metric", "is"], "invalid choice"),
    (["--plot_only"], "--plot_only needs the --out_dir"),
    (["--plot_only", "--out_dir", "x", "--runs", "dcgan"], "--plot_only trains nothing"),
])
def test_bad_arguments_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        quality.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_an_existing_run_directory_is_refused_before_anything_runs(tmp_path):
    os.makedirs(tmp_path / "dcgan_batch_size_64")
    with pytest.raises(quality.QualityError, match="already exists; give the run 'dcgan --batch_size 64'"):
        quality.main(["--runs", "dcgan --batch_size 64", "--out_dir", str(tmp_path)])
    fake_experiment(str(tmp_path / "other"))
    with pytest.raises(quality.QualityError, match="scored by classifier_fd of 5000 samples"):
        quality.main(["--runs", "wgan", "--eval_samples", "10000", "--out_dir", str(tmp_path / "other")])


# ------------------------------------------------------------------------------------------------- cadence
@pytest.mark.parametrize("x, expected", [(0.3, 1), (1, 1), (7, 8), (9.4, 10), (10.5, 10), (11.5, 12), (57, 60),
                                         (105, 100), (140, 150), (183.4, 200), (2300, 2500), (34_000, 30_000)])
def test_nice_interval(x, expected):
    assert quality.nice_interval(x) == expected


def test_cadence_gives_about_the_asked_points_and_logs_at_every_evaluation():
    for steps in [5, 37, 120, 599, 1000, 1834, 2121, 7777, 31_000]:
        eval_every, log_every = quality.cadence(steps, 10)
        assert 8 <= steps / eval_every <= 12.5 or eval_every == 1, steps
        assert eval_every % log_every == 0 and quality.SCRIPT_LOG_EVERY % log_every == 0
    assert quality.cadence(1834, 10) == (200, 50) and quality.cadence(599, 10) == (60, 10)
    assert quality.cadence(3, 10) == (1, 1)


def timing_rows(config, unit, overhead, steps):
    """metrics.jsonl rows of a run logging every step whose step i costs unit * (critic updates + 1)."""
    t, rows = overhead, []
    for step in range(steps):
        t += unit * (quality.critic_updates(config, step) + 1)
        rows.append({"step": step + 1, "train_seconds": t, "critic_loss": 0.0})
    return rows


@pytest.mark.parametrize("config", [{"variant": "dcgan"}, {"variant": "wgan_gp", "n_critic": 5},
                                    {"variant": "wgan", "n_critic": 5, "critic_warmup": True},
                                    {"variant": "wgan", "n_critic": 3, "critic_warmup": False}])
def test_fit_step_cost_recovers_the_unit_and_the_tracing_overhead(config):
    unit, overhead = quality.fit_step_cost(timing_rows(config, 0.037, 4.5, 3), config)
    assert unit == pytest.approx(0.037) and overhead == pytest.approx(4.5)
    # One step alone: all of it is cost (more evaluations rather than fewer), no overhead.
    unit, overhead = quality.fit_step_cost(timing_rows(config, 0.037, 4.5, 1), config)
    assert unit * (quality.critic_updates(config, 0) + 1) == pytest.approx(0.037 * (
        quality.critic_updates(config, 0) + 1) + 4.5) and overhead == 0


def test_fit_step_cost_needs_every_step():
    rows = [{"step": s, "train_seconds": s * 0.1} for s in (50, 100)]
    with pytest.raises(quality.QualityError, match="did not log every step"):
        quality.fit_step_cost(rows, {"variant": "dcgan"})


def test_predicted_steps_follow_the_critic_schedule():
    # DCGAN: 2 units per step, 0.02 s: 60 s after a 5 s overhead is 55 / 0.02 = 2750 steps; a step that ends past
    # the budget still counts, as in the scripts.
    assert quality.predict_steps({"variant": "dcgan"}, 59.995, 0.01, 5.0) == 2750
    assert quality.predict_steps({"variant": "dcgan"}, 60.005, 0.01, 5.0) == 2751
    # WGAN with the warm-up at unit 0.01 s: steps 0-24 cost 1.01 s each (25.25 s), steps 25-499 0.06 s (28.5 s),
    # step 500 1.01 s again (54.76 s), then ceil(5.24 / 0.06) = 88 more.
    warm = {"variant": "wgan", "n_critic": 5, "critic_warmup": True}
    assert quality.predict_steps(warm, 60.0, 0.01) == 501 + math.ceil((60 - 54.76) / 0.06)
    assert quality.predict_steps({**warm, "critic_warmup": False}, 60.03, 0.01) == 1001
    assert quality.predict_steps({"variant": "dcgan"}, 1.0, 0.01, 5.0) == 0


# ----------------------------------------------------------------------------------------- reading a run
def test_curve_reads_scores_times_and_the_losses_logged_at_each_evaluation(tmp_path):
    run_dir = str(tmp_path / "run")
    fake_run(run_dir, steps=100, eval_every=20, log_every=10, seconds_per_step=0.6)
    rows = quality.curve(run_dir, "classifier_fd")
    assert [r["step"] for r in rows] == [20, 40, 60, 80, 100]
    assert [r["train_minutes"] for r in rows] == pytest.approx([s * 0.6 / 60 for s in (20, 40, 60, 80, 100)])
    assert [r["classifier_fd"] for r in rows] == pytest.approx([400 / s for s in (20, 40, 60, 80, 100)])
    assert [r["generator_loss"] for r in rows] == [22.0, 42.0, 62.0, 82.0, 102.0]
    # The final checkpoint's separate score joins the curve unless its step was evaluated in training.
    rows = quality.curve(run_dir, "classifier_fd", {"step": 100, "classifier_fd": 99.0})
    assert rows[-1]["classifier_fd"] == pytest.approx(4.0)


def test_curve_interpolates_the_time_of_an_evaluation_between_log_lines(tmp_path):
    run_dir = str(tmp_path / "run")
    fake_run(run_dir, steps=33, eval_every=20, log_every=10, seconds_per_step=1.2)
    rows = quality.curve(run_dir, "classifier_fd", {"step": 33, "classifier_fd": 12.0})
    assert [r["step"] for r in rows] == [20, 33]
    assert rows[1]["classifier_fd"] == 12.0 and rows[1]["train_minutes"] == pytest.approx(33 * 1.2 / 60)
    # Step 25 is no log step: its time lies between steps 20 and 30, its losses are step 20's.
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write('\n{"step": 25, "eval/classifier_fd": 3.0}\n')
    row = {r["step"]: r for r in quality.curve(run_dir, "classifier_fd")}[25]
    assert row["train_minutes"] == pytest.approx(25 * 1.2 / 60) and row["generator_loss"] == 22.0


def test_curve_refuses_a_run_without_train_seconds(tmp_path):
    os.makedirs(tmp_path / "old")
    (tmp_path / "old" / "metrics.jsonl").write_text('{"step": 50, "critic_loss": 1.0}\n')
    with pytest.raises(quality.QualityError, match="no train_seconds"):
        quality.curve(str(tmp_path / "old"), "classifier_fd")
    with pytest.raises(quality.QualityError, match="no metrics.jsonl"):
        quality.curve(str(tmp_path), "classifier_fd")


# -------------------------------------------------------------------------------------------------- outputs
def test_outputs_from_synthetic_runs(tmp_path, capsys):
    import matplotlib  # noqa: F401 -- requirements-dev.txt; a missing plotting library fails here, not skips
    out_dir = str(tmp_path)
    grids = fake_experiment(out_dir)
    quality.main(["--out_dir", out_dir, "--plot_only", "--scale", "2"])
    assert "quality.csv" in capsys.readouterr().out

    with open(tmp_path / "quality.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:7] == ["run", "variant", "step", "train_minutes", "classifier_fd", "critic_loss",
                                  "generator_loss"]
    assert {"wasserstein", "gradient_penalty", "steps_per_sec"} <= set(table[0])
    dcgan = [r for r in table if r["run"] == "dcgan"]
    gp = [r for r in table if r["run"] == "wgan_gp --n_critic 5"]
    assert [int(r["step"]) for r in dcgan] == [20, 40, 60, 80, 100]
    assert [int(r["step"]) for r in gp] == [10, 20, 30, 40, 45]  # 45: the final checkpoint's own score
    assert float(gp[-1]["classifier_fd"]) == 17.5 and float(gp[-1]["train_minutes"]) == pytest.approx(45 * 1.3 / 60)
    assert float(gp[0]["wasserstein"]) == pytest.approx(1.0) and dcgan[0]["wasserstein"] == ""

    with Image.open(tmp_path / "quality.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 500
    with Image.open(tmp_path / "samples.png") as image:
        panels = np.asarray(image.convert("L"))
    # Each final grid, enlarged twice by pixel repetition, side by side at the same height, in run order.
    big = [np.repeat(np.repeat(g, 2, axis=0), 2, axis=1) for g in grids]
    h, w = big[0].shape
    top = panels.shape[0] - 16 - h  # the grids sit at the bottom, above a 16-pixel margin
    found = [x for x in range(panels.shape[1] - w + 1) for g in big if np.array_equal(panels[top:top + h, x:x + w], g)]
    assert len(found) == 2 and found[0] == 16 and np.array_equal(panels[top:top + h, found[1]:found[1] + w], big[1])


def test_without_matplotlib_the_csv_and_grids_are_still_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    fake_experiment(str(tmp_path))
    quality.main(["--out_dir", str(tmp_path), "--plot_only"])
    lines = capsys.readouterr().out.strip().splitlines()
    hint = [line for line in lines if "pip install" in line]
    assert len(hint) == 1 and "matplotlib is missing" in hint[0]
    assert "pip install -r requirements-dev.txt" in hint[0] and "--plot_only" in hint[0]
    assert (tmp_path / "quality.csv").exists() and (tmp_path / "samples.png").exists()
    assert not (tmp_path / "quality.png").exists()


def test_plot_only_needs_an_output_directory_of_quality_py(tmp_path):
    with pytest.raises(quality.QualityError, match="holds no quality.json"):
        quality.main(["--out_dir", str(tmp_path), "--plot_only"])
    (tmp_path / "quality.json").write_text("[1, 2]")
    with pytest.raises(quality.QualityError, match="was not written by quality.py"):
        quality.main(["--out_dir", str(tmp_path), "--plot_only"])


# ------------------------------------------------------------------------------------------ with the scripts
TINY = "--image_size 28 --width 8 --batch_size 16 --z_dim 16"


def test_a_flag_the_script_refuses_stops_everything_before_training(tmp_path):
    # The scripts' own parsers check every run first (one TensorFlow start-up, about 5 s), so a typo in the last
    # run is reported before the first one trains, in the script's words.
    out_dir = tmp_path / "out"
    with pytest.raises(quality.QualityError, match=r"unrecognized arguments: --n_critc 3 \(in the run "
                                                   r"'wgan --n_critc 3'\)"):
        quality.main(["--runs", "dcgan", "wgan --n_critc 3", "--out_dir", str(out_dir)])
    assert not out_dir.exists()


@pytest.mark.slow  # another TensorFlow start-up (about 4 s) for the scripts' validation after parsing
def test_a_value_the_script_refuses_stops_everything_before_training(tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(quality.QualityError, match=r"--lr must be positive.*\(in the run 'dcgan --lr -1'\)"):
        quality.main(["--runs", "dcgan --lr -1", "--out_dir", str(out_dir)])
    assert not out_dir.exists()


@pytest.mark.slow
def test_end_to_end_with_calibration(tiny_fashion, tmp_path, monkeypatch, capsys):
    # About 90 s on 2 CPU cores: per run a calibration, the training and (for DCGAN) the final score, each a
    # TensorFlow start-up; the offline classifier is trained on the tiny data in a few seconds.
    monkeypatch.setenv("GAN_CACHE", str(tmp_path / "cache"))
    out_dir = tmp_path / "out"
    quality.main(["--runs", f"dcgan --data_dir {tiny_fashion} {TINY}", f"wgan --data_dir {tiny_fashion} {TINY}",
                  "--label", "dcgan", "wgan", "--minutes", "0.1", "--calibration_minutes", "0.05", "--points", "4",
                  "--eval_samples", "50", "--out_dir", str(out_dir)])
    manifest = json.loads((out_dir / "quality.json").read_text())
    assert [r["label"] for r in manifest["runs"]] == ["dcgan", "wgan"]
    with open(out_dir / "quality.csv") as f:
        table = list(csv.DictReader(f))
    for run in manifest["runs"]:
        rows = [r for r in table if r["run"] == run["label"]]
        steps = [int(r["step"]) for r in rows]
        assert len(rows) >= 2 and steps == sorted(steps) and steps[-1] == run["final"]["step"]
        assert all(int(s) % run["eval_every"] == 0 for s in steps[:-1])
        assert float(rows[-1]["train_minutes"]) >= 0.1  # the run stopped by its training-time budget
        assert all(math.isfinite(float(r["classifier_fd"])) for r in rows) and rows[0]["critic_loss"] != ""
        assert run["calibration"]["predicted_steps"] >= 1
    assert (out_dir / "samples.png").exists() and not (out_dir / ".calibration").exists()
    # A second command adds a run to the same plot; the first runs stay as they were.
    quality.main(["--runs", f"dcgan --data_dir {tiny_fashion} {TINY} --batch_size 8", "--label", "dcgan-b8",
                  "--steps", "4", "--points", "2", "--eval_samples", "50", "--out_dir", str(out_dir)])
    with open(out_dir / "quality.csv") as f:
        table2 = list(csv.DictReader(f))
    assert table2[:len(table)] == table and [int(r["step"]) for r in table2[len(table):]] == [2, 4]


def test_curve_carries_eval_extra_values_as_columns(tmp_path):
    run_dir = str(tmp_path / "run")
    fake_run(run_dir, steps=40, eval_every=20)
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:  # as --eval_extra logs them, beside the metric
        f.write('\n{"step": 20, "eval/classifier_recall": 0.25, "eval/classes": 3}\n')
    rows = quality.curve(run_dir, "classifier_fd")
    assert [r["step"] for r in rows] == [20, 40]
    assert (rows[0]["classifier_recall"], rows[0]["classes"]) == (0.25, 3) and "classifier_recall" not in rows[1]
    quality.write_csv(str(tmp_path / "q.csv"), [("run", "dcgan", rows)], "classifier_fd")
    header = (tmp_path / "q.csv").read_text().splitlines()[0].split(",")
    assert {"classifier_recall", "classes"} <= set(header)
    assert quality.own_flags({"flags": []}, quality.parse_args(["--steps", "10", "--eval_extra", "classes"]), 5, 5)[
        -4:-2] == ["--eval_extra", "classes"]

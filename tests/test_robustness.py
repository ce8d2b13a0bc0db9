"""experiments/robustness.py --quick: every cell is the script's own run, scored, drawn and tabulated."""
import csv
import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import robustness  # noqa: E402


def run_quick(tiny_fashion, out_dir, *extra):
    robustness.main(["--quick", "--dataset", "fashion_mnist", "--data_dir", tiny_fashion, "--out_dir", str(out_dir),
                     *extra])


def read_csv(out_dir):
    with open(out_dir / "robustness.csv") as f:
        return list(csv.DictReader(f))


def test_one_row_then_another_join_one_figure(tiny_fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_CACHE", str(tmp_path / "cache"))  # the offline classifier is trained here, once
    monkeypatch.setattr(robustness.metrics, "CLASSIFIER_EPOCHS", 1)
    out = tmp_path / "fig"
    run_quick(tiny_fashion, out, "--rows", "mlp_g", "--columns", "dcgan")
    run_quick(tiny_fashion, out, "--rows", "mlp_g", "nobn_g", "--columns", "dcgan")  # mlp_g is not retrained
    rows = read_csv(out)
    assert [(r["row"], r["column"]) for r in rows] == [("nobn_g", "dcgan"), ("mlp_g", "dcgan")]
    for r in rows:
        assert int(r["steps"]) == 2 and int(r["samples"]) == 64 and r["budget"] == "2 steps"
        assert float(r["classifier_fd"]) >= 0 and 0 <= float(r["classifier_precision"]) <= 1
        assert 0 <= float(r["classifier_recall"]) <= 1 and 0 <= int(r["classes"]) <= 10
        config = json.loads((out / f"{r['row']}-dcgan" / "config.json").read_text())
        assert config["arch"] == r["row"] and config["variant"] == "dcgan" and config["beta1"] == 0.5  # its defaults
    table = (out / "robustness.md").read_text()
    assert "| mlp_g | dcgan | 2 |" in table and "k 5" in table and "64 fake vs" in table
    assert (out / "robustness.png").stat().st_size > 1000


@pytest.mark.slow
def test_the_whole_quick_figure(tiny_fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(robustness.metrics, "CLASSIFIER_EPOCHS", 1)
    run_quick(tiny_fashion, tmp_path / "fig")
    rows = read_csv(tmp_path / "fig")
    assert {(r["row"], r["column"]) for r in rows} == {(a, v) for a in robustness.ROWS for v in robustness.COLUMNS}


def test_docs_csv_holds_both_budgets_one_row_per_cell():
    """docs/robustness.csv is one long CSV: the 5-minute figure and the 2-minute smoke run, told apart by budget."""
    with open(os.path.join(ROOT, "docs", "robustness.csv")) as f:
        rows = list(csv.DictReader(f))
    cells = {(a, v) for a in robustness.ROWS for v in robustness.COLUMNS}
    for budget, samples in (("5 min", "5000"), ("2 min", "2000")):
        mine = [r for r in rows if r["budget"] == budget]
        assert sorted((r["row"], r["column"]) for r in mine) == sorted(cells)
        assert {r["samples"] for r in mine} == {samples}
    assert len(rows) == 30

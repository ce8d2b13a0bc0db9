"""A run directory saved once and committed (tests/fixtures/dcgan_run: a 4-step dcgan.py run on the tiny
Fashion-MNIST of conftest.py, --image_size 16 --width 4 --z_dim 8 --batch_size 8) restores, samples and resumes
with the code as it is: the layout, config keys and checkpoint object names are part of what users keep.

Its config holds no commit and no data path (both null); the resume passes --data_dir."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import ROOT, cli_in_process

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "dcgan_run")
EXPECTED = os.path.join(ROOT, "tests", "fixtures", "dcgan_run_samples.npz")  # sample.py's output when saved


@pytest.fixture
def saved_run(tmp_path):
    run_dir = str(tmp_path / "dcgan_run")
    shutil.copytree(FIXTURE, run_dir)
    return run_dir


def test_the_saved_generator_draws_the_images_it_drew_when_saved(saved_run, tmp_path, capsys):
    import sample
    out = str(tmp_path / "fake.npz")
    code, _, err = cli_in_process(sample.main, [saved_run, "--num", 16, "--format", "npz", "--out", out], capsys)
    assert code == 0, err
    images, expected = np.load(out)["images"], np.load(EXPECTED)["images"]
    assert images.shape == expected.shape == (16, 16, 16, 1)
    # The same weights and noise; one 8-bit level of rounding allowed across CPUs' convolution kernels.
    diff = np.abs(images.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05


def test_the_saved_run_writes_a_grid(saved_run, tmp_path, capsys):
    import sample
    from PIL import Image
    out = str(tmp_path / "grid.png")
    code, _, err = cli_in_process(sample.main, [saved_run, "--rows", 2, "--cols", 3, "--out", out], capsys)
    assert code == 0, err
    assert Image.open(out).size == (3 * 16 + 2 * 2, 2 * 16 + 1 * 2)  # 2-pixel gaps between tiles, no border


def test_the_saved_run_resumes_to_a_later_step(saved_run, tiny_fashion, capsys):
    import dcgan
    config_before = json.load(open(os.path.join(saved_run, "config.json")))
    code, out, err = cli_in_process(dcgan.main, ["--resume", saved_run, "--data_dir", tiny_fashion, "--steps", 6],
                                    capsys)
    assert code == 0, err
    assert "resumed from" in out and "ckpt-4" in out and "finished at step 6" in out
    assert os.path.exists(os.path.join(saved_run, "ckpt", "ckpt-6.index"))
    steps = [json.loads(line)["step"] for line in open(os.path.join(saved_run, "metrics.jsonl"))]
    assert steps == [2, 4, 6]
    config_after = json.load(open(os.path.join(saved_run, "config.json")))
    assert set(config_before) <= set(config_after)
    for key in ("variant", "image_size", "width", "z_dim", "first_bn", "fit", "arch", "norm", "seed"):
        assert config_after[key] == config_before[key]

"""Tests for sample.py on a fake dcgan run made here: two checkpoints with different weights, a ckpt_best/, and
BatchNorm moving statistics far from their defaults, so that inference mode shows in the pixels."""
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
import data  # noqa: E402
import ops  # noqa: E402
import sample  # noqa: E402

CONFIG = dict(variant="dcgan", image_size=32, channels=1, z_dim=100, width=8, seed=0, dataset="fashion_mnist")
STEPS = (100, 200)  # ckpt-200 is the newest; ckpt_best/ holds step 100


def make_generator(weights=None):
    generator = ops.make_generator(CONFIG["image_size"], CONFIG["channels"], CONFIG["z_dim"], CONFIG["width"])
    for v, w in zip(generator.variables, weights or []):
        v.assign(w)
    return generator


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run_dir, {step: the generator's variables saved at that step})."""
    run_dir = tmp_path_factory.mktemp("runs") / "dcgan-fashion_mnist-test"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(CONFIG))
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    generator, step = make_generator(), tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(generator=generator, step=step)
    weights = {}
    for s in STEPS:
        for v in generator.trainable_variables:
            v.assign_add(rng.normal(0.0, 0.02, v.shape).astype(np.float32))
        for layer in generator.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                shape = layer.moving_mean.shape
                layer.moving_mean.assign(rng.normal(0.0, 0.2, shape).astype(np.float32))
                layer.moving_variance.assign(rng.uniform(0.02, 0.2, shape).astype(np.float32))
        step.assign(s)
        for folder in ("ckpt", "ckpt_best") if s == 100 else ("ckpt",):
            tf.train.CheckpointManager(checkpoint, str(run_dir / folder), max_to_keep=None,
                                       checkpoint_name="ckpt").save(checkpoint_number=s)
        weights[s] = [v.numpy() for v in generator.variables]
    return str(run_dir), weights


def read_png(path):
    return np.array(Image.open(path))


def expected_grid(weights, rows=8, cols=8, seed=0):
    images = common.generate_images(make_generator(weights), rows * cols, CONFIG["z_dim"], seed)
    return data.image_grid(images, rows, cols)[..., 0]


def tiles(grid, rows, cols, size=32, pad=2):
    """A grid read back from PNG -> [rows, cols, size, size]."""
    return np.array([[grid[r * (size + pad):r * (size + pad) + size, c * (size + pad):c * (size + pad) + size]
                      for c in range(cols)] for r in range(rows)])


# ----------------------------------------------------------------------------------------------------- slerp
def test_slerp_hand_values():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(sample.slerp(a, b, 0.5), [2 ** -0.5, 2 ** -0.5, 0.0], rtol=1e-12)
    np.testing.assert_allclose(sample.slerp(a, b, 1 / 3), [np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0], rtol=1e-12)
    np.testing.assert_allclose(sample.lerp(a, b, 0.5), [0.5, 0.5, 0.0])
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 100)), rng.normal(size=(5, 100))
    b *= np.linalg.norm(a, axis=-1, keepdims=True) / np.linalg.norm(b, axis=-1, keepdims=True)
    for interp in (sample.slerp, sample.lerp):  # endpoints exact, not just close
        assert np.array_equal(interp(a, b, 0.0), a) and np.array_equal(interp(a, b, 1.0), b)
    for t in (0.1, 0.5, 0.9):  # equal-norm endpoints: slerp stays on the sphere, lerp cuts inside it
        np.testing.assert_allclose(np.linalg.norm(sample.slerp(a, b, t), axis=-1), np.linalg.norm(a, axis=-1))
        assert np.all(np.linalg.norm(sample.lerp(a, b, t), axis=-1) < np.linalg.norm(a, axis=-1))


def test_slerp_falls_back_to_lerp_for_parallel_vectors():
    a = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]])
    b = np.array([[2.0, 4.0, 6.0], [0.0, 1.0, 0.0]])  # row 0 parallel, row 1 orthogonal
    out = sample.slerp(a, b, 0.25)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], sample.lerp(a[0], b[0], 0.25))
    np.testing.assert_allclose(out[1], [np.cos(np.pi / 8), np.sin(np.pi / 8), 0.0])


def test_latent_walks_share_endpoints_across_interp():
    slerp, lerp = (sample.latent_walks(3, 6, 100, seed=4, interp=i) for i in ("slerp", "lerp"))
    assert slerp.shape == (3, 6, 100) and slerp.dtype == np.float32
    assert np.array_equal(slerp[:, [0, -1]], lerp[:, [0, -1]])
    assert not np.allclose(slerp[:, 3], lerp[:, 3])
    assert not np.array_equal(sample.latent_walks(3, 6, 100, seed=5)[:, 0], slerp[:, 0])


# ------------------------------------------------------------------------------------------------------ grids
def test_default_grid_is_newest_checkpoint(run):
    run_dir, weights = run
    out = sample.main([run_dir])
    assert out == os.path.join(run_dir, "samples", "sample_step200.png")
    grid = read_png(out)
    assert grid.shape == (8 * 32 + 7 * 2, 8 * 32 + 7 * 2)
    assert np.array_equal(grid, expected_grid(weights[200]))


def test_grid_rows_cols_and_seed(run, tmp_path):
    run_dir, weights = run
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    for path, seed in zip(paths, (3, 3, 4)):
        sample.main([run_dir, "--rows", "2", "--cols", "5", "--seed", str(seed), "--out", path])
    assert read_png(paths[0]).shape == (2 * 32 + 2, 5 * 32 + 4 * 2)
    assert open(paths[0], "rb").read() == open(paths[1], "rb").read()
    assert not np.array_equal(read_png(paths[0]), read_png(paths[2]))
    assert np.array_equal(read_png(paths[2]), expected_grid(weights[200], 2, 5, seed=4))


def test_step_and_best_pick_their_weights(run, tmp_path):
    run_dir, weights = run
    sample.main([run_dir, "--step", "100", "--out", str(tmp_path / "old.png")])
    assert np.array_equal(read_png(tmp_path / "old.png"), expected_grid(weights[100]))
    assert not np.array_equal(expected_grid(weights[100]), expected_grid(weights[200]))
    out = sample.main([run_dir, "--best"])
    assert out.endswith("sample_step100.png") and np.array_equal(read_png(out), expected_grid(weights[100]))


# ------------------------------------------------------------------------------------------- single images
def test_num_png_and_npz_hold_the_same_images(run, tmp_path):
    run_dir, weights = run
    folder = sample.main([run_dir, "--num", "7", "--batch_size", "3"])
    assert folder == os.path.join(run_dir, "samples", "images_step200")
    names = sorted(os.listdir(folder))
    assert names == [f"{i:06d}.png" for i in range(7)]
    assert all(Image.open(os.path.join(folder, n)).size == (32, 32) for n in names)
    sample.main([run_dir, "--num", "7", "--format", "npz", "--out", str(tmp_path / "fake")])
    sample.main([run_dir, "--num", "7", "--out", str(tmp_path / "inferred.npz")])  # --format from the suffix
    with np.load(tmp_path / "fake") as f:
        assert list(f.keys()) == ["images"]
        images = f["images"]
    assert images.shape == (7, 32, 32, 1) and images.dtype == np.uint8
    assert np.array_equal(np.load(tmp_path / "inferred.npz")["images"], images)
    assert np.array_equal(np.stack([read_png(os.path.join(folder, n)) for n in names]), images[..., 0])
    reference = common.generate_images(make_generator(weights[200]), 7, CONFIG["z_dim"], 0)
    assert np.array_equal(images, reference)


def test_num_png_refuses_a_nonempty_folder_and_keeps_it(run, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(common.RunError, match="not empty"):
        sample.main([run[0], "--num", "2", "--out", str(tmp_path)])
    assert os.listdir(tmp_path) == ["mine.txt"]


def test_failed_write_leaves_no_partial_output(run, tmp_path, monkeypatch):
    written, save = [], Image.Image.save

    def save_then_fail(image, path, *args, **kwargs):
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(path)
        save(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_fail)
    with pytest.raises(common.RunError, match="No space left"):
        sample.main([run[0], "--num", "5", "--out", str(tmp_path / "out")])
    assert len(written) == 3 and os.listdir(tmp_path) == []

    def half_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_savez)
    (tmp_path / "out.npz").write_bytes(b"an earlier, complete archive")
    with pytest.raises(common.RunError, match="No space left"):
        sample.main([run[0], "--num", "5", "--out", str(tmp_path / "out.npz")])
    assert os.listdir(tmp_path) == ["out.npz"]
    assert (tmp_path / "out.npz").read_bytes() == b"an earlier, complete archive"


# --------------------------------------------------------------------------------------------- interpolation
def test_interpolation_endpoints_in_inference_mode(run, tmp_path):
    run_dir, weights = run
    out = sample.main([run_dir, "--interpolate", "3", "--interp_steps", "4", "--seed", "2", "--out",
                       str(tmp_path / "walk.png")])
    grid = read_png(out)
    assert grid.shape == (3 * 32 + 2 * 2, 4 * 32 + 3 * 2)
    got = tiles(grid, 3, 4)
    z = sample.latent_walks(3, 4, CONFIG["z_dim"], seed=2)
    for column in (0, -1):
        # A fresh generator each time: training=True also updates BatchNorm's moving statistics.
        inference, training = (data.to_uint8(make_generator(weights[200])(z[:, column], training=t))[..., 0]
                               for t in (False, True))
        assert np.array_equal(got[:, column], inference)
        assert not np.array_equal(got[:, column], training)  # batch statistics would give other pictures
    assert len({got[0, c].tobytes() for c in range(4)}) == 4
    sample.main([run_dir, "--interpolate", "3", "--interp_steps", "4", "--seed", "2", "--interp", "lerp",
                 "--out", str(tmp_path / "lerp.png")])
    lerp = tiles(read_png(tmp_path / "lerp.png"), 3, 4)
    assert np.array_equal(lerp[:, [0, -1]], got[:, [0, -1]]) and not np.array_equal(lerp, got)


def test_gif_walks_there_and_back(run):
    out = sample.main([run[0], "--interpolate", "3", "--interp_steps", "5", "--gif"])
    assert out == os.path.join(run[0], "samples", "interp_step200.gif")
    with Image.open(out) as gif:
        assert gif.n_frames == 2 * 5 - 2 and gif.info["loop"] == 0
        assert gif.size == (2 * 32 + 2, 2 * 32 + 2)  # 3 paths in a 2x2 grid


# ----------------------------------------------------------------------------------------------------- scale
def repeat(image, n):
    return np.repeat(np.repeat(image, n, axis=0), n, axis=1)


def test_scale_3_grid_is_the_grid_with_every_pixel_repeated(run, tmp_path):
    for scale in (1, 3):
        sample.main([run[0], "--rows", "2", "--cols", "3", "--scale", str(scale), "--out",
                     str(tmp_path / f"{scale}.png")])
    small, large = read_png(tmp_path / "1.png"), read_png(tmp_path / "3.png")
    assert small.shape == (2 * 32 + 2, 3 * 32 + 2 * 2) and large.shape == (3 * small.shape[0], 3 * small.shape[1])
    assert np.array_equal(large, repeat(small, 3))
    assert np.array_equal(small, expected_grid(run[1][200], 2, 3))


def test_scale_enlarges_single_images_walks_and_gif_frames_but_not_npz(run, tmp_path):
    run_dir = run[0]
    out = {}
    for name, argv in (("png", ["--num", "3"]), ("npz", ["--num", "3", "--format", "npz"]),
                       ("walk", ["--interpolate", "2", "--interp_steps", "3"]),
                       ("gif", ["--interpolate", "2", "--interp_steps", "3", "--gif"])):
        for scale in (1, 2):
            out[name, scale] = sample.main([run_dir, *argv, "--scale", str(scale), "--out",
                                            str(tmp_path / f"{name}{scale}")])
    for i in range(3):
        small = read_png(os.path.join(out["png", 1], f"{i:06d}.png"))
        assert small.shape == (32, 32)
        assert np.array_equal(read_png(os.path.join(out["png", 2], f"{i:06d}.png")), repeat(small, 2))
    with np.load(out["npz", 1]) as small, np.load(out["npz", 2]) as large:
        assert large["images"].shape == (3, 32, 32, 1) and np.array_equal(large["images"], small["images"])
    assert np.array_equal(read_png(out["walk", 2]), repeat(read_png(out["walk", 1]), 2))
    with Image.open(out["gif", 1]) as small, Image.open(out["gif", 2]) as large:
        assert large.n_frames == small.n_frames == 4 and large.size == (2 * small.size[0], 2 * small.size[1])
        for frame in range(small.n_frames):
            small.seek(frame)
            large.seek(frame)
            assert np.array_equal(np.array(large.convert("L")), repeat(np.array(small.convert("L")), 2))


@pytest.mark.parametrize("scale", ["0", "-2"])
def test_scale_below_1_is_refused_in_one_sentence(run, capsys, scale):
    with pytest.raises(SystemExit) as exit:
        sample.main([run[0], "--scale", scale])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(": error: --scale must be at least 1")


# -------------------------------------------------------------------------------------------------- refusals
def damaged(run_dir, tmp_path, how):
    copy = str(tmp_path / "damaged")
    shutil.copytree(run_dir, copy)
    if how == "truncated data":
        os.truncate(os.path.join(copy, "ckpt", "ckpt-200.data-00000-of-00001"), 1000)
    else:
        with open(os.path.join(copy, "ckpt", "ckpt-200.index"), "wb") as f:
            f.write(b"garbage" * 100)
    return copy


REFUSALS = {  # name -> (argv from run_dir and tmp_path, what the sentence says)
    "not a run": (lambda run, tmp: [str(tmp)], "no config.json"),
    "missing dir": (lambda run, tmp: [str(tmp / "nope")], "not a directory"),
    "no checkpoint": (lambda run, tmp: [shutil.copytree(run, tmp / "r", ignore=shutil.ignore_patterns("ckpt*"))],
                      "no checkpoint yet"),
    "unknown step": (lambda run, tmp: [run, "--step", "150"], "kept steps: 100, 200"),
    "truncated data": (lambda run, tmp: [damaged(run, tmp, "truncated data")], "damaged"),
    "garbage index": (lambda run, tmp: [damaged(run, tmp, "garbage index")], "cannot be restored"),
    "grid under a file": (lambda run, tmp: [run, "--out", str(tmp / "file" / "x.png")], "cannot write"),
    "npz under a file": (lambda run, tmp: [run, "--num", "2", "--out", str(tmp / "file" / "x.npz")],
                         "cannot write"),
    "folder under a file": (lambda run, tmp: [run, "--num", "2", "--out", str(tmp / "file" / "x")], "cannot write"),
    "gif under a file": (lambda run, tmp: [run, "--interpolate", "2", "--gif", "--out", str(tmp / "file" / "x.gif")],
                         "cannot write"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_one_sentence(run, tmp_path, capsys, case):
    (tmp_path / "file").write_text("a regular file")
    argv, says = REFUSALS[case]
    argv = [str(a) for a in argv(run[0], tmp_path)]
    with pytest.raises(SystemExit) as exit:
        common.cli(lambda: sample.main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert says in err[0]
    assert (tmp_path / "file").read_text() == "a regular file"


# ------------------------------------------------------------------------------------------------------- CLI
def cli(*argv):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}  # TF's C++ start-up chatter is not ours
    return subprocess.run([sys.executable, "sample.py", *map(str, argv)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_grid_is_the_same_picture_as_in_process(run, tmp_path):
    result = cli(run[0], "--rows", "3", "--cols", "4", "--seed", "9", "--out", tmp_path / "cli.png")
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "cli.png") in result.stdout
    sample.main([run[0], "--rows", "3", "--cols", "4", "--seed", "9", "--out", str(tmp_path / "here.png")])
    assert (tmp_path / "cli.png").read_bytes() == (tmp_path / "here.png").read_bytes()


@pytest.mark.parametrize("case", ["truncated data",  # every case in-process above; one through the CLI is enough
                                  pytest.param("grid under a file", marks=pytest.mark.slow)])
def test_cli_refusal_exit_status_and_one_line(run, tmp_path, case):
    (tmp_path / "file").write_text("a regular file")
    argv, says = REFUSALS[case]
    result = cli(*argv(run[0], tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert result.stdout == ""

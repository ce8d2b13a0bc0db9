"""experiments/representation.py: the critic's pooled features, the linear classifier, the label draw, the split's
walls, and the command on tiny runs (the committed dcgan run and a 2-step wgan_gp run on tiny_fashion)."""
import csv
import io
import json
import os
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, cli_in_process
from test_data import cifar_dir  # noqa: F401 -- the fixture: CIFAR-10 batches written as the release has them

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import common  # noqa: E402
import ops  # noqa: E402
import representation as rep  # noqa: E402
import wgan_gp  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "dcgan_run")  # dcgan.py, 16x16, width 4, seed 0
TINY = ["--val_size", "16", "--labels_per_class", "1", "all", "--classifier_steps", "20", "--supervised_steps", "4",
        "--batch_size", "50"]


# ------------------------------------------------------------------------------------------------ features
def numpy_grid_max(x, grid=4):
    """The reference pooling: [B, H, H, C] -> [B, grid, grid, C], cells floor(i H / g) .. ceil((i + 1) H / g)."""
    size = x.shape[1]
    if size <= grid:
        return x
    edges = [(i * size // grid, -(-(i + 1) * size // grid)) for i in range(grid)]
    return np.stack([np.stack([x[:, a:b, c:d].max(axis=(1, 2)) for c, d in edges], 1) for a, b in edges], 1)


def test_pooling_and_concatenation_on_a_hand_built_network():
    # image [8, 8, 1] -> conv 1x1 to (x, -x) -> ReLU -> conv 2x2/2 summing both channels -> [4, 4, 1] -> score
    x_in = keras.Input((8, 8, 1))
    first = keras.layers.Conv2D(2, 1, use_bias=False)
    h = keras.layers.ReLU()(first(x_in))
    second = keras.layers.Conv2D(1, 2, strides=2, use_bias=False)
    h2 = second(h)
    network = keras.Model(x_in, keras.layers.Dense(1)(keras.layers.Flatten()(h2)))
    first.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2)])
    second.set_weights([np.ones((2, 2, 2, 1), np.float32)])
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    features = rep.feature_extractor(network, batch_size=2)(images)  # batches of 2, 2 and 1
    x = images.astype(np.float32) / 127.5 - 1.0
    relu = np.maximum(np.concatenate([x, -x], -1), 0.0)  # the first conv's output after its ReLU
    summed = relu.reshape(5, 4, 2, 4, 2, 2).sum(axis=(2, 4, 5))[..., None]  # the second conv: [5, 4, 4, 1]
    expected = np.concatenate([numpy_grid_max(relu).reshape(5, -1), summed.reshape(5, -1)], 1)
    assert features.shape == (5, 4 * 4 * 2 + 4 * 4 * 1)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [4, 7, 8, 14, 16])
def test_grid_pooling_matches_the_reference(size):
    x = np.random.default_rng(size).normal(size=(3, size, size, 2)).astype(np.float32)
    pooled = np.asarray(rep.max_pool_grid(tf.constant(x)))
    assert pooled.shape == (3, min(size, 4), min(size, 4), 2)
    np.testing.assert_array_equal(pooled, numpy_grid_max(x))


def expected_feature_size(arch, image_size, width):
    """From the architectures of ops.py: the DCGAN critic's convs halve the size down to the base and double the
    channels (width, 2 width, ...); WGAN-GP's ResNet critic has 10 convs of `width` channels, all at 8x8 or more
    (3 in its first block, 3 with the 1x1 shortcut in the down block, 2 in each of the two plain blocks)."""
    if arch == "resnet":
        return 10 * 16 * width
    base, halvings = ops.base_size(image_size)
    sizes = [image_size // 2 ** (i + 1) for i in range(halvings)]
    return sum(min(s, 4) ** 2 * width * 2 ** i for i, s in enumerate(sizes))


@pytest.mark.parametrize("arch,image_size,norm", [(a, 32, "batch") for a in ops.ARCHS]
                         + [("dcgan", 28, "batch"), ("dcgan", 16, "layer"), ("no_norm", 64, "layer")])
def test_feature_sizes_of_every_arch(arch, image_size, norm):
    width = 4
    critic = ops.make_critic(image_size, 1, width, norm=norm, arch=arch)
    outputs = rep.feature_outputs(critic)
    assert len(outputs) == sum(isinstance(layer, keras.layers.Conv2D) for layer in critic.layers)
    if arch != "resnet":  # the DCGAN critic: each conv's output is taken after its normalisation and nonlinearity
        producers = {id(layer.output): layer for layer in critic.layers}
        assert all(isinstance(producers[id(t)], (keras.layers.LeakyReLU, keras.layers.Activation)) for t in outputs)
    images = np.zeros((3, image_size, image_size, 1), np.uint8)
    features = rep.feature_extractor(critic)(images)
    assert features.shape == (3, expected_feature_size(arch, image_size, width))
    assert expected_feature_size("dcgan", 32, 64) == 7168  # the default critic: 16 x (64 + 128 + 256)


# ---------------------------------------------------------------------------------------------- classifier
def test_linear_classifier_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 1.0, (10, 40)).astype(np.float32)

    def separable(n):
        y = rng.integers(0, 10, n)
        return centres[y] * 3 + rng.normal(0.0, 0.3, (n, 40)).astype(np.float32), y
    (x, y), (xv, yv), (xt, yt) = separable(300), separable(300), separable(1000)
    predict, l2, val_accuracy = rep.fit_linear(x, y, xv, yv, steps=200)
    assert (predict(xt) == yt).mean() > 0.99 and l2 in rep.L2S and val_accuracy.shape == (len(rep.L2S),)

    def noise(n):
        return rng.normal(0.0, 1.0, (n, 40)).astype(np.float32), rng.integers(0, 10, n)
    (x, y), (xv, yv), (xt, yt) = noise(300), noise(300), noise(3000)
    predict, _, _ = rep.fit_linear(x, y, xv, yv, steps=200)
    assert 0.06 < (predict(xt) == yt).mean() < 0.14  # chance is 0.10; 3 standard deviations are 0.016


def test_features_are_standardised_with_the_training_statistics():
    x = np.random.default_rng(0).normal(5.0, 3.0, (1000, 3)).astype(np.float32)
    x[:, 2] = 7.0  # constant: divided by 1, not by 0
    mean, std = rep.mean_std(x, chunk=64)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std[:2], x[:, :2].std(0), rtol=1e-4)
    assert std[2] == 1.0


def test_supervised_baseline_keeps_its_best_weights(runs, tiny_fashion, monkeypatch):
    monkeypatch.setattr(rep, "CHECK_EVERY", 2)
    monkeypatch.setattr(rep, "PATIENCE", 2)
    x, y, _, _ = rep.load_data("fashion_mnist", tiny_fashion, 16, 1, "resize")
    config = common.saved_flags(str(runs / "dcgan"))
    predict, step, val_accuracy, cap = rep.train_supervised(config, x[:64], y[:64], x[64:], y[64:], max_steps=12)
    assert cap == 12 and step % 2 == 0 and 2 <= step <= 12
    assert (predict(x[64:]) == y[64:]).mean() == val_accuracy  # the weights of the best check, not the last step's


# ---------------------------------------------------------------------------------------- splits and labels
def test_validation_split_is_fixed_and_disjoint():
    val, rest = rep.split_train(1000, 100, seed=0)
    assert len(val) == 100 and len(rest) == 900 and not set(val) & set(rest)
    assert sorted(set(val) | set(rest)) == list(range(1000))
    np.testing.assert_array_equal(val, rep.split_train(1000, 100, seed=0)[0])
    assert not np.array_equal(val, rep.split_train(1000, 100, seed=1)[0])
    with pytest.raises(common.RunError, match="leaves no labelled images"):
        rep.split_train(96, 96, seed=0)


def test_labels_per_class_draw_is_stratified_seeded_and_nested():
    labels = np.repeat(np.arange(10), np.arange(20, 30))  # class c has 20 + c images
    pool = np.arange(len(labels))[::2]  # the draw may only take these
    five = rep.draw_labelled(labels, pool, 5, (0, 3))
    assert np.bincount(labels[five], minlength=10).tolist() == [5] * 10
    assert set(five) <= set(pool)
    np.testing.assert_array_equal(five, rep.draw_labelled(labels, pool, 5, (0, 3)))
    assert not np.array_equal(five, rep.draw_labelled(labels, pool, 5, (0, 4)))
    assert set(rep.draw_labelled(labels, pool, 2, (0, 3))) <= set(five)  # smaller draws are part of larger ones
    np.testing.assert_array_equal(rep.draw_labelled(labels, pool, "all", (0, 3)), pool)
    with pytest.raises(common.RunError, match="needs 11 images of class 0"):
        rep.draw_labelled(labels, pool, 11, (0, 3))


def test_no_test_image_reaches_training_or_model_selection(tiny_fashion, monkeypatch, capsys):
    # Every test image gets a white top-left pixel, which no training image has (the blobs keep off the corners).
    load_images = rep.data.load_images

    def marked(*args, **kwargs):
        images = load_images(*args, **kwargs)
        split = kwargs.get("split", args[4] if len(args) > 4 else "train")
        assert split == "test" or not images[:, 0, 0].any()
        if split == "test":
            images[:, 0, 0] = 255
        return images
    seen = {"linear": [], "supervised": []}
    fit_linear, train_supervised = rep.fit_linear, rep.train_supervised

    def spy_linear(x, y, x_val, y_val, *args, **kwargs):
        seen["linear"].append((x, x_val))
        return fit_linear(x, y, x_val, y_val, *args, **kwargs)

    def spy_supervised(config, x, y, x_val, y_val, *args, **kwargs):
        seen["supervised"].append((x, x_val))
        return train_supervised(config, x, y, x_val, y_val, *args, **kwargs)
    monkeypatch.setattr(rep.data, "load_images", marked)
    monkeypatch.setattr(rep, "fit_linear", spy_linear)
    monkeypatch.setattr(rep, "train_supervised", spy_supervised)
    code, out, err = cli_in_process(rep.main, [FIXTURE, "--data_dir", tiny_fashion, *TINY, "--labels_per_class",
                                               "all"], capsys)
    assert code == 0, err
    pixel_fits = [(x, xv) for x, xv in seen["linear"] if x.shape[1] == 16 * 16]  # pixels in [-1, 1]: corner 1 = test
    assert len(pixel_fits) == 1 and len(seen["linear"]) == 3 and len(seen["supervised"]) == 1
    for x, x_val in pixel_fits:
        assert (x[:, 0] == -1).all() and (x_val[:, 0] == -1).all()
    for x, x_val in seen["supervised"]:
        assert not x[:, 0, 0].any() and not x_val[:, 0, 0].any()
        assert len(x_val) == 16


# -------------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def runs(tiny_fashion, tmp_path_factory):
    """The committed 4-step dcgan run and a 2-step wgan_gp run (layer norm, seed 1), both 16x16, width 4."""
    root = tmp_path_factory.mktemp("representation")
    shutil.copytree(FIXTURE, root / "dcgan")
    wgan_gp.main(["--data_dir", tiny_fashion, "--image_size", "16", "--width", "4", "--z_dim", "8", "--steps", "2",
                  "--batch_size", "8", "--n_critic", "1", "--seed", "1", "--out_dir", str(root / "wgan_gp"),
                  "--log_every", "1"])
    keras.mixed_precision.set_global_policy("float32")
    return root


def test_the_command_end_to_end(runs, tiny_fashion, tmp_path, capsys):
    code, out, err = cli_in_process(rep.main, [runs / "dcgan", runs / "wgan_gp", "--data_dir", tiny_fashion, *TINY,
                                               "--csv", tmp_path / "r.csv", "--plot", tmp_path / "r.png"], capsys)
    assert code == 0, err
    assert "| trained critic | dcgan.py | 0 |" in out and "| trained critic | wgan_gp.py | 1 |" in out
    assert "| critic at initialisation | dcgan critic, layer norm, width 4 | 1 |" in out
    assert "| supervised network | dcgan critic, batch norm, width 4 | 0 |" in out and "all (80 labels)" in out
    assert " * |" in out and "came at its last allowed step" in out  # 4 supervised steps: the cap decides
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    # 2 runs x (trained, random, supervised, pixels) x 2 label counts; the pixels differ by seed (the label draw)
    assert len(rows) == 16 and set(rows[0]) == set(rep.CSV_COLUMNS)
    for r in rows:
        assert 0 <= float(r["test_accuracy"]) <= 1 and r["labels"] == ("10" if r["labels_per_class"] == "1" else "80")
        assert (r["l2"] != "") == (r["features"] != "supervised") and (r["run"] != "") == (r["features"] == "trained")
    assert (tmp_path / "r.png").stat().st_size > 5000


def test_trained_features_are_the_checkpoints(runs):
    critic, config, path = rep.load_critic(str(runs / "dcgan"))
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    trained = rep.feature_extractor(critic)(images)
    assert path.endswith("ckpt-4") and trained.shape == (4, 192)  # 16 x (4 + 8)
    assert not np.allclose(trained, rep.feature_extractor(rep.initial_critic(config))(images))
    np.testing.assert_array_equal(rep.feature_extractor(rep.initial_critic(config))(images),
                                  rep.feature_extractor(rep.initial_critic(config))(images))  # seeded


@pytest.mark.parametrize("change,message", [
    ({"dataset": "folder"}, "a folder run has no labels"),
    ({"width": 8}, "cannot be restored into the critic described by config.json"),
])
def test_refusals_are_one_sentence(runs, tiny_fashion, tmp_path, capsys, change, message):
    run_dir = tmp_path / "run"
    shutil.copytree(runs / "dcgan", run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, **change}))
    code, out, err = cli_in_process(rep.main, [run_dir, "--data_dir", tiny_fashion, *TINY], capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


def test_cifar10_labels_come_from_its_batches_in_the_images_order(cifar_dir):
    """Through data.py's restricted unpickler: image i of batch k has red value 10k + i and label (10k + i) % 10
    (test_data.py's release-format batches)."""
    train_x, train_y, test_x, test_y = rep.load_data("cifar10", str(cifar_dir), 32, 3, "resize")
    assert train_x.shape == (10, 32, 32, 3) and test_x.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(train_y, train_x[:, 0, 0, 0].astype(np.int64) % 10)
    np.testing.assert_array_equal(test_y, [0, 1, 2])


def test_a_validation_set_as_large_as_the_training_split_is_refused(runs, tiny_fashion, capsys):
    code, _, err = cli_in_process(rep.main, [runs / "dcgan", "--data_dir", tiny_fashion, *TINY, "--val_size", "96"],
                                  capsys)
    assert code == 2 and "--val_size 96 leaves no labelled images of the 96 training images" in err

"""Tests for metrics.py: the distances against closed forms, the Inception path on a small graph built here, the
offline classifier on generated labelled data, and the command line. Nothing here can reach the network."""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
import data  # noqa: E402
import inception  # noqa: E402
import metrics  # noqa: E402
import ops  # noqa: E402
from conftest import cli_in_process  # noqa: E402
from inception_graphs import FEATURE_DIM, make_archive, pin  # noqa: E402
import inception_graphs  # noqa: E402

OFFLINE_ENV = {**os.environ, "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
               "no_proxy": "", "NO_PROXY": ""}  # any download attempt fails at once


# ----------------------------------------------------------------------------------------- Fréchet distance
def random_rotation(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2, a, b = rng.normal(size=5), rng.normal(size=5), rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_commuting_closed_form():
    # S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T commute, so tr((S1 S2)^1/2) = sum sqrt(a b) although neither is
    # diagonal; the formula is the diagonal one in the rotated basis.
    rng = np.random.default_rng(1)
    d = 64
    q, a, b = random_rotation(d, rng), rng.uniform(0.01, 5, d), rng.uniform(0.01, 5, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_general_case_against_the_eigenvalues_of_s1_s2():
    # A second route to tr((S1 S2)^1/2): the sum of the square roots of the eigenvalues of the non-symmetric S1 S2
    # (similar to S1^1/2 S2 S1^1/2, so real and non-negative), from numpy's general eigensolver; the code under test
    # takes two symmetric square roots instead.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(200, 20)), rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    mu1, mu2 = x.mean(0), y.mean(0)
    eigenvalues = np.linalg.eigvals(s1 @ s2)
    assert np.abs(eigenvalues.imag).max() < 1e-9 * np.abs(eigenvalues).max() and eigenvalues.real.min() > 0
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.sqrt(eigenvalues.real).sum()
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_identical_and_rank_deficient_statistics():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(10, 50))  # 10 samples in 50 dimensions: a singular covariance, as with few samples
    mu, sigma = metrics.statistics(feats)
    same = metrics.frechet_distance(mu, sigma, mu, sigma)
    # sqrt() of round-off eigenvalues ~1e-15 of a singular matrix contributes ~1e-8 each: small, not zero.
    assert np.isfinite(same) and abs(same) < 1e-5 * np.trace(sigma)
    assert metrics.frechet_distance(mu, sigma, mu + 1.0, sigma) == pytest.approx(50.0, rel=1e-5)


# ----------------------------------------------------------------------------------------------------- KID
def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2000, 32)), rng.normal(size=(2000, 32))
    same = metrics.kernel_inception_distance(x, y, num_subsets=20, subset_size=1000)
    shifted = metrics.kernel_inception_distance(x, y + 0.5, num_subsets=20, subset_size=1000)
    assert abs(same) < 2e-3
    assert shifted > 0.05 and shifted > 50 * abs(same)


def test_kid_is_unbiased_for_identical_sets_of_distinct_points():
    # On one set against itself the unbiased estimator is negative (the diagonal is left out), never exactly 0:
    # a biased V-statistic would give exactly 0 here.
    x = np.random.default_rng(5).normal(size=(50, 8))
    assert metrics.kernel_inception_distance(x, x, num_subsets=1, subset_size=50) < 0


def test_inception_score_bounds():
    confident = np.eye(10)[np.arange(1000) % 10] * 50.0  # sure of each image, all 10 classes equally often
    assert metrics.inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert metrics.inception_score(np.zeros((1000, 10))) == pytest.approx(1.0)


# ---------------------------------------------------------- Inception scores (the graph itself: test_inception.py)
@pytest.fixture(scope="module")
def toy_graph(tmp_path_factory):
    return inception_graphs.toy_graph(tmp_path_factory.mktemp("inception"))


def test_offline_without_a_copy_refuses_in_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "INCEPTION_URL", (tmp_path / "missing" / "inception-2015-12-05.tgz").as_uri())
    with pytest.raises(common.RunError, match="--inception") as e:
        metrics.make_scorer("fid", "fashion_mnist", cache_dir=str(tmp_path / "cache"))
    assert str(e.value).count(". ") == 0 and "\n" not in str(e.value)
    assert not list((tmp_path / "cache").iterdir())  # no partial download left behind


def test_inception_scorer_end_to_end(toy_graph, tiny_fashion, tmp_path):
    kw = dict(data_dir=tiny_fashion, image_size=16, channels=1, cache_dir=str(tmp_path), inception_path=toy_graph[0])
    score = metrics.make_scorer(["fid", "kid", "is"], "fashion_mnist", **kw)
    assert list(score(np.zeros((4, 16, 16, 1), np.uint8))) == ["fid", "kid", "is"]
    real = data.load_images("fashion_mnist", tiny_fashion, 16, 1)
    values = score(real)  # the reference images themselves: the same statistics
    assert abs(values["fid"]) < 1e-6 and values["is"] >= 1.0
    noise = np.random.default_rng(8).integers(0, 256, real.shape, dtype=np.uint8)
    assert score(noise)["fid"] > 1e-3 and score(noise)["kid"] > values["kid"]
    with pytest.raises(common.RunError, match="uint8"):
        score(real[:, :8, :8])
    assert len(os.listdir(tmp_path / "stats")) == 1  # the reference statistics are cached ...
    stats = next((tmp_path / "stats").iterdir())
    mtime = stats.stat().st_mtime_ns
    metrics.make_scorer("fid", "fashion_mnist", **kw)
    assert stats.stat().st_mtime_ns == mtime  # ... and reused


# ---------------------------------------------------------------------------------------- offline classifier
def write_idx(path, array, magic):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A (Fashion-)MNIST-format folder, images and labels: class k is a bright bar in the k-th of 10 positions."""
    d = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(9)
    for split, n in (("train", 600), ("t10k", 200)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            if k < 5:
                images[i, 2 + 5 * k:5 + 5 * k, 4:24] = 230
            else:
                images[i, 4:24, 2 + 5 * (k - 5):5 + 5 * (k - 5)] = 230
        write_idx(d / f"{split}-images-idx3-ubyte.gz", images, 0x803)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", labels, 0x801)
    return str(d)


@pytest.fixture(scope="module")
def trained_cache(labelled, tmp_path_factory):
    """A cache holding a classifier trained for 2 epochs on `labelled`, and its reference statistics."""
    cache = str(tmp_path_factory.mktemp("cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "CLASSIFIER_EPOCHS", 2)
        metrics.make_scorer(["classifier_fd", "classifier_kid"], "mnist", labelled, cache_dir=cache)
    return cache


def test_classifier_is_trained_once_then_loaded(labelled, trained_cache, monkeypatch):
    files = sorted(os.listdir(os.path.join(trained_cache, "classifier")))
    assert [f.split("-")[-1] for f in files] == ["1ch.json", "1ch.weights.h5"]
    with open(os.path.join(trained_cache, "classifier", files[0])) as f:
        info = json.load(f)
    assert info["epochs"] == 2 and 0.0 <= info["test_accuracy"] <= 1.0

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")
    monkeypatch.setattr(metrics, "train_classifier", no_training)
    score = metrics.make_scorer(["classifier_fd", "classifier_kid"], "mnist", labelled, cache_dir=trained_cache)
    test = data.load_images("mnist", labelled, 32, 1, split="test")
    noise = np.random.default_rng(10).permutation(test.reshape(-1)).reshape(test.shape)  # same pixels, shuffled
    good, bad = score(test), score(noise)
    assert list(good) == ["classifier_fd", "classifier_kid"]
    assert good["classifier_fd"] < bad["classifier_fd"] / 5 and good["classifier_kid"] < bad["classifier_kid"]


def test_classifier_metrics_need_a_labelled_dataset(tmp_path):
    with pytest.raises(common.RunError, match="fid"):
        metrics.make_scorer("classifier_fd", "cifar10", cache_dir=str(tmp_path))
    with pytest.raises(common.RunError, match="unknown metric"):
        metrics.make_scorer("fid_classifier", "mnist", cache_dir=str(tmp_path))


@pytest.mark.slow
def test_classifier_accuracy_on_fashion_mnist(tmp_path):
    if not os.path.isdir(data.DEBIAN_FASHION_MNIST):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    start = time.perf_counter()
    path = os.path.join(tmp_path, "classifier.weights.h5")
    _, info = metrics.train_classifier("fashion_mnist", None, 32, 1, path)
    print(f"classifier: test accuracy {info['test_accuracy']:.4f} in {time.perf_counter() - start:.0f} s")
    assert info["test_accuracy"] >= 0.90


# ------------------------------------------------------------------------------------ a cache shared by runs
def race(monkeypatch, entry, fn, n=2):
    """Run fn() in n threads that all hold their finished temporary file before any renames it to `entry` (the
    moment where fixed temporary names collide); -> their results. An exception in a thread fails the test."""
    barrier, replace = threading.Barrier(n, timeout=120), os.replace
    results, errors = [None] * n, []

    def replace_together(src, dst, **kwargs):
        if os.fspath(dst) == os.fspath(entry):
            barrier.wait()
        return replace(src, dst, **kwargs)

    def worker(i):
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: B036 - reported in the main thread
            errors.append(e)
            barrier.abort()

    monkeypatch.setattr(os, "replace", replace_together)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(os, "replace", replace)
    if errors:
        raise errors[0]
    return results


def leftovers(folder):
    return [f for root, _, files in os.walk(folder) for f in files if f.startswith(".") or ".tmp" in f]


def test_concurrent_runs_write_the_same_statistics(toy_graph, tiny_fashion, tmp_path, monkeypatch):
    kw = dict(data_dir=tiny_fashion, image_size=16, channels=1, cache_dir=str(tmp_path), inception_path=toy_graph[0])
    entry = tmp_path / "stats" / f"inception-{metrics._key('fashion_mnist', tiny_fashion, 16, 1)}-train.npz"
    scorers = race(monkeypatch, entry, lambda: metrics.make_scorer(["fid", "kid"], "fashion_mnist", **kw))
    assert os.listdir(tmp_path / "stats") == [entry.name] and not leftovers(tmp_path)
    with np.load(entry) as f:
        assert f["mu"].shape == (FEATURE_DIM,) and f["sigma"].shape == (FEATURE_DIM, FEATURE_DIM)
    images = data.load_images("fashion_mnist", tiny_fashion, 16, 1)[:20]
    assert scorers[0](images) == scorers[1](images) == metrics.make_scorer(["fid", "kid"], "fashion_mnist",
                                                                           **kw)(images)


def test_concurrent_downloads_of_the_archive(toy_graph, tmp_path, monkeypatch):
    archive = make_archive(tmp_path, toy_graph[0])
    pin(monkeypatch, archive)
    monkeypatch.setattr(inception, "INCEPTION_URL", archive.as_uri())
    cache = tmp_path / "cache"
    paths = race(monkeypatch, cache / archive.name, lambda: inception._archive(str(cache)), n=3)
    assert paths == [str(cache / archive.name)] * 3
    assert os.listdir(cache) == [archive.name] and (cache / archive.name).read_bytes() == archive.read_bytes()


def test_concurrent_runs_train_the_same_classifier(labelled, tmp_path, monkeypatch):
    monkeypatch.setattr(metrics.keras.Model, "fit", lambda *args, **kwargs: None)  # the seeded initial weights
    key = metrics._key("mnist", labelled, 32, 1)
    networks = race(monkeypatch, tmp_path / "classifier" / f"{key}.weights.h5",
                    lambda: metrics.classifier_network("mnist", labelled, cache_dir=str(tmp_path)))
    assert sorted(os.listdir(tmp_path / "classifier")) == [f"{key}.json", f"{key}.weights.h5"]
    assert not leftovers(tmp_path)
    with open(tmp_path / "classifier" / f"{key}.json") as f:
        assert json.load(f)["dataset"] == "mnist"
    loaded, loaded_id = metrics.classifier_network("mnist", labelled, cache_dir=str(tmp_path))  # complete file
    images = data.load_images("mnist", labelled, 32, 1, split="test")[:8]
    assert networks[0][1] == networks[1][1] == loaded_id  # the id of the weights, equal when they are
    np.testing.assert_array_equal(networks[0][0](images)[0], loaded(images)[0])


def test_the_network_id_is_of_the_weights_used_not_of_the_file(labelled, tmp_path, monkeypatch):
    # Another run replaces the cached weights with its own just after this run wrote them: this run's statistics
    # must carry the id of the network it computes features with, so that the other weights do not inherit them.
    monkeypatch.setattr(metrics.keras.Model, "fit", lambda *args, **kwargs: None)  # the seeded initial weights
    other = metrics.make_classifier(seed=1)
    entry = tmp_path / "classifier" / f"{metrics._key('mnist', labelled, 32, 1)}.weights.h5"
    replace = os.replace

    def then_another_run(src, dst, **kwargs):
        replace(src, dst, **kwargs)
        if os.fspath(dst) == os.fspath(entry):
            other.save_weights(str(tmp_path / "other.weights.h5"))
            replace(tmp_path / "other.weights.h5", entry)

    monkeypatch.setattr(os, "replace", then_another_run)
    _, trained_id = metrics.classifier_network("mnist", labelled, cache_dir=str(tmp_path))
    monkeypatch.setattr(os, "replace", replace)
    _, loaded_id = metrics.classifier_network("mnist", labelled, cache_dir=str(tmp_path))
    assert trained_id == metrics._weights_id(metrics.make_classifier())
    assert loaded_id == metrics._weights_id(other) != trained_id


def test_failed_cache_writes_leave_nothing_behind(labelled, tiny_fashion, toy_graph, tmp_path, monkeypatch):
    def half_then_fail(*args, **kwargs):
        target = args[1] if isinstance(args[0], keras_model) else args[0]
        if hasattr(target, "write"):
            target.write(b"PK\x03\x04 half")
        else:
            with open(target, "wb") as f:
                f.write(b"\x89HDF half")
        raise OSError(28, "No space left on device")

    keras_model = metrics.keras.Model
    kw = dict(data_dir=tiny_fashion, image_size=16, channels=1, cache_dir=str(tmp_path), inception_path=toy_graph[0])
    with monkeypatch.context() as mp:
        mp.setattr(np, "savez", half_then_fail)
        with pytest.raises(common.RunError, match="cannot write .*No space left on device") as e:
            metrics.make_scorer("fid", "fashion_mnist", **kw)
    assert "\n" not in str(e.value) and os.listdir(tmp_path / "stats") == []

    (tmp_path / "stats" / f"inception-{metrics._key('fashion_mnist', tiny_fashion, 16, 1)}-train.npz").write_bytes(
        b"PK\x03\x04 a damaged entry")  # e.g. copied half: recomputed, not a traceback
    metrics.make_scorer("fid", "fashion_mnist", **kw)(data.load_images("fashion_mnist", tiny_fashion, 16, 1))

    monkeypatch.setattr(keras_model, "fit", lambda *args, **kwargs: None)
    monkeypatch.setattr(keras_model, "save_weights", half_then_fail)
    with pytest.raises(common.RunError, match="No space left on device"):
        metrics.classifier_network("mnist", labelled, cache_dir=str(tmp_path))
    assert not leftovers(tmp_path) and not [f for f in os.listdir(tmp_path / "classifier") if f.endswith(".h5")]

    monkeypatch.setattr(inception, "INCEPTION_URL", make_archive(tmp_path, toy_graph[0]).as_uri())  # size not pinned
    with pytest.raises(common.RunError, match="bytes, not the"):
        inception._archive(str(tmp_path / "download"))
    assert os.listdir(tmp_path / "download") == []


# ------------------------------------------------------------------------------- evaluation during training
@pytest.mark.parametrize("metric", [None, "classifier_fd", "classifier_kid", "fid", "kid", ["fid", "is"]])
def test_check_eval_args_refuses_too_few_samples_in_one_sentence(metric):
    with pytest.raises(common.RunError, match="--eval_samples 1 is too few") as e:
        metrics.check_eval_args(1, metric)
    assert str(e.value).count(". ") == 0 and "\n" not in str(e.value)
    metrics.check_eval_args(metrics.MIN_SAMPLES, metric)
    with pytest.raises(common.RunError, match="unknown metric"):
        metrics.check_eval_args(10, "fd")


def test_the_smallest_accepted_count_scores(labelled, trained_cache):
    # MIN_SAMPLES is the real minimum: 2 images give finite FD and KID (KID's subsets of 1,000 shrink to 2) ...
    score = metrics.make_scorer(["classifier_fd", "classifier_kid"], "mnist", labelled, cache_dir=trained_cache)
    two = data.load_images("mnist", labelled, 32, 1, split="test")[:metrics.MIN_SAMPLES]
    assert all(np.isfinite(v) for v in score(two).values())
    with pytest.raises(common.RunError, match="N >= 2"):  # ... and one does not
        score(two[:1])


class FakeLogger:
    def __init__(self):
        self.scalars_calls, self.lines = [], []

    def scalars(self, step, values):
        self.scalars_calls.append((step, values))

    def write(self, line):
        self.lines.append(line)


def eval_args(labelled, **overrides):
    return argparse.Namespace(**{**dict(metric=None, dataset="mnist", data_dir=labelled, image_size=32, channels=1,
                                        eval_samples=24, z_dim=16, seed=3), **overrides})


def test_evaluator_scores_logs_and_returns_the_first_value(labelled, trained_cache, monkeypatch):
    monkeypatch.setenv("GAN_CACHE", trained_cache)
    generator = ops.make_generator(32, 1, 16, 8)
    images = common.generate_images(generator, 24, 16, seed=4)  # the run's seed + 1: not the sample grid's noise
    for metric in (None, "classifier_kid"):
        name = metric or "classifier_fd"
        expected = metrics.make_scorer(name, "mnist", labelled, cache_dir=trained_cache)(images)[name]
        logger = FakeLogger()
        value = metrics.Evaluator(eval_args(labelled, metric=metric))(generator, 7, logger)
        assert value == expected
        assert logger.scalars_calls == [(7, {f"eval/{name}": expected})]
        assert logger.lines == [f"step 7: {name} {expected:.4g}"]


def test_evaluator_refuses_too_few_samples_before_building_anything(labelled, monkeypatch):
    def no_scorer(*args, **kwargs):
        raise AssertionError("the count should have been refused before the networks are loaded")
    monkeypatch.setattr(metrics, "make_scorer", no_scorer)
    with pytest.raises(common.RunError, match="--eval_samples 1"):
        metrics.Evaluator(eval_args(labelled, eval_samples=1))


# ------------------------------------------------------------------------------------------- command line
def run_cli(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "metrics.py"), *args], capture_output=True,
                          text=True, env=env or OFFLINE_ENV, cwd=ROOT, timeout=300)


def run_main(capsys, *args):
    return cli_in_process(metrics.main, args, capsys)  # `python metrics.py ARGS`, in this process


def test_cli_scores_an_npz_and_a_png_folder_alike(labelled, trained_cache, tmp_path, capsys):
    images = data.load_images("mnist", labelled, 32, 1, split="test")[:50]
    np.savez(tmp_path / "fake.npz", images=images)
    for i, image in enumerate(images):
        data.save_image(image, str(tmp_path / "png" / f"{i:06d}.png"))
    outputs = []
    for source in (tmp_path / "fake.npz", tmp_path / "png"):
        code, out, err = run_main(capsys, str(source), "--dataset", "mnist", "--data_dir", labelled, "--cache_dir",
                                  trained_cache, "--metric", "classifier_fd", "classifier_kid")
        assert code == 0, err
        lines = out.strip().splitlines()
        assert [line.split(": ")[0] for line in lines] == ["classifier_fd", "classifier_kid"]
        outputs.append([float(line.split(": ")[1].split()[0]) for line in lines])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4)  # PNG round trip is lossless


def test_cli_fid_offline_without_the_graph_exits_2_in_one_sentence(tmp_path):
    np.savez(tmp_path / "fake.npz", images=np.zeros((10, 32, 32, 1), np.uint8))
    result = run_cli(str(tmp_path / "fake.npz"), "--dataset", "fashion_mnist", "--metric", "fid",
                     "--cache_dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    message = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(message) == 1 and "--inception" in message[0], result.stderr


def test_cli_refuses_bad_inputs_in_one_sentence(tmp_path, capsys):
    np.savez(tmp_path / "floats.npz", images=np.zeros((10, 32, 32, 1), np.float32))
    np.savez(tmp_path / "fake.npz", images=np.zeros((10, 32, 32, 1), np.uint8))
    for args in ((str(tmp_path / "floats.npz"), "--dataset", "mnist"), (str(tmp_path / "nothing_here"),),
                 (str(tmp_path / "fake.npz"),)):  # float images, no such path, no --dataset for a file
        code, out, err = run_main(capsys, *args, "--cache_dir", str(tmp_path / "cache"))
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err


def npz_with_header(path, shape, data=b"", compression=zipfile.ZIP_STORED):
    """An .npz whose 'images' member has a uint8 .npy header claiming `shape` followed by only `data`."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("images.npy", header.getvalue() + data)
    return str(path)


class Unpickled:
    """Creates `marker` when unpickled: an object array holding one must never be unpickled."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def refuses_before_computing(monkeypatch, capsys, path, *args):
    """metrics.py PATH ARGS ends in one sentence naming PATH with exit status 2, before any network is built."""
    monkeypatch.setattr(metrics, "make_scorer", lambda *a, **k: pytest.fail("the input should have been refused"))
    code, out, err = run_main(capsys, path, "--dataset", "mnist", *args)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert path in err and err.count(". ") == 0, err
    return err


def test_an_npz_whose_header_claims_909_tib_is_refused_from_the_header(tmp_path, monkeypatch, capsys):
    huge = npz_with_header(tmp_path / "huge.npz", (10 ** 9, 1000, 1000, 1), bytes(64))  # 10^15 bytes = 909 TiB
    assert "909.5 TiB" in refuses_before_computing(monkeypatch, capsys, huge)
    for claim in ((4, 32, 32, 1), (2, 16, 16, 3)):  # a few images, cut short
        assert "header" in refuses_before_computing(monkeypatch, capsys,
                                                    npz_with_header(tmp_path / "short.npz", claim, bytes(100)))
    # The zip entry lies too: a compressed member claiming the header's 4 MB in a few bytes.
    lying = tmp_path / "lying.npz"
    npz_with_header(lying, (4, 1000, 1000, 1), bytes(1000), compression=zipfile.ZIP_DEFLATED)
    raw = bytearray(lying.read_bytes())
    claimed = struct.pack("<I", 4 * 1000 * 1000 + zipfile.ZipFile(lying).infolist()[0].file_size - 1000)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = raw.index(signature) + offset
        raw[at:at + 4] = claimed
    lying.write_bytes(raw)
    assert "more than compression can give" in refuses_before_computing(monkeypatch, capsys, str(lying))


@pytest.mark.parametrize("images, expected", [
    (np.zeros((4, 16, 12, 1), np.uint8), "16x12"),  # not square
    (np.zeros((1, 16, 16, 1), np.uint8), "1 image"),  # fewer than MIN_SAMPLES
    (np.zeros((4, 16, 16, 2), np.uint8), "(4, 16, 16, 2)"),  # 2 channels
    (np.zeros((4, 16, 16), np.uint8), "(4, 16, 16)"),  # no channel axis
    (np.zeros((4, 16, 16, 1), np.float32), "float32"),
])
def test_an_npz_of_unusable_images_is_refused_before_anything_is_computed(images, expected, tmp_path, monkeypatch,
                                                                            capsys):
    np.savez(tmp_path / "bad.npz", images=images)
    assert expected in refuses_before_computing(monkeypatch, capsys, str(tmp_path / "bad.npz"))


def test_an_npz_with_fewer_images_than_num_is_refused(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "ten.npz", images=np.zeros((10, 16, 16, 1), np.uint8))
    assert "--num 20" in refuses_before_computing(monkeypatch, capsys, str(tmp_path / "ten.npz"), "--num", "20")


def test_an_npz_of_pickled_objects_is_refused_unpickled(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "unpickled"
    np.savez(tmp_path / "objects.npz", images=np.array([Unpickled(str(marker))] * 4, dtype=object))
    assert "object" in refuses_before_computing(monkeypatch, capsys, str(tmp_path / "objects.npz"))
    assert not marker.exists()


def test_an_npz_is_read_as_np_load_reads_it_and_num_takes_the_first(tmp_path):
    images = np.random.default_rng(11).integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", images=images)
    np.savez_compressed(tmp_path / "z.npz", images=images)
    np.savez(tmp_path / "f.npz", images=np.asfortranarray(images))
    for name in ("c", "z", "f"):
        read = metrics.read_npz(str(tmp_path / f"{name}.npz"))
        assert read.dtype == np.uint8 and read.flags.writeable
        np.testing.assert_array_equal(read, images)
        np.testing.assert_array_equal(metrics.read_npz(str(tmp_path / f"{name}.npz"), 3), images[:3])


def test_cli_scores_a_run_directory(labelled, trained_cache, tmp_path, capsys):
    import ops  # the run directory is made here: one checkpoint of a small generator, as the scripts save it
    run_dir = tmp_path / "dcgan-mnist-test"
    run_dir.mkdir()
    config = dict(variant="dcgan", dataset="mnist", data_dir=labelled, image_size=32, channels=1, z_dim=16, width=8,
                  seed=0)
    (run_dir / "config.json").write_text(json.dumps(config))
    generator = ops.make_generator(32, 1, 16, 8)
    tf.train.CheckpointManager(tf.train.Checkpoint(generator=generator), str(run_dir / "ckpt"), 1,
                               checkpoint_name="ckpt").save(checkpoint_number=10)
    code, out, err = run_main(capsys, str(run_dir), "--num", "64", "--cache_dir", trained_cache)  # the run's dataset
    assert code == 0, err
    name, value = out.strip().split(": ")
    assert name == "classifier_fd" and float(value.split()[0]) > 0 and "64 fake" in value
    code, out, err = run_main(capsys, str(run_dir), "--best", "--cache_dir", trained_cache)
    assert code == 2 and "best checkpoint" in err and err.startswith("error: ") and err.count("\n") == 1, err


def stats_files(cache):
    return sorted(os.listdir(os.path.join(cache, "stats")))


def test_pad_statistics_are_of_padded_images_and_cached_apart(labelled, trained_cache, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    shutil.copytree(trained_cache, cache)
    monkeypatch.setattr(metrics, "train_classifier", lambda *a, **k: pytest.fail("the resize classifier serves pad"))
    key = f"classifier-mnist-{hashlib.sha1(os.path.abspath(labelled).encode()).hexdigest()[:8]}-32px-1ch"
    resized = metrics.make_scorer("classifier_fd", "mnist", labelled, cache_dir=cache)
    assert stats_files(cache) == [f"{key}-train.npz"]  # resize's statistics carry no suffix
    padded = metrics.make_scorer("classifier_fd", "mnist", labelled, cache_dir=cache, fit="pad")
    assert stats_files(cache) == [f"{key}-pad-train.npz", f"{key}-train.npz"]
    real = {fit: data.load_images("mnist", labelled, 32, fit=fit) for fit in data.FITS}
    # The reference images themselves score (about) 0, each against its own geometry's statistics.
    assert padded(real["pad"])["classifier_fd"] < 1e-3 * resized(real["pad"])["classifier_fd"]
    assert resized(real["resize"])["classifier_fd"] < 1e-3 * padded(real["resize"])["classifier_fd"]


def test_evaluator_and_cli_use_the_runs_fit(labelled, trained_cache, tmp_path, monkeypatch, capsys):
    cache = str(tmp_path / "cache")
    shutil.copytree(trained_cache, cache)
    monkeypatch.setenv("GAN_CACHE", cache)
    resize_only = stats_files(cache)
    run_dir = tmp_path / "dcgan-mnist-pad"  # as in test_cli_scores_a_run_directory, with the config's fit
    run_dir.mkdir()
    config = dict(variant="dcgan", dataset="mnist", data_dir=labelled, image_size=32, channels=1, z_dim=16, width=8,
                  seed=0)
    tf.train.CheckpointManager(tf.train.Checkpoint(generator=ops.make_generator(32, 1, 16, 8)), str(run_dir / "ckpt"),
                               1, checkpoint_name="ckpt").save(checkpoint_number=1)
    for fit in (None, "pad"):  # None: args and a config.json without fit, i.e. resize
        (run_dir / "config.json").write_text(json.dumps(config if fit is None else {**config, "fit": fit}))
        # The CLI scoring the run, then the Evaluator, each from a cache holding the resize statistics only.
        code, _, err = run_main(capsys, str(run_dir), "--num", "16")
        assert code == 0, err
        assert len(stats_files(cache)) == len(resize_only) + (fit == "pad")
        for name in set(stats_files(cache)) - set(resize_only):
            os.remove(os.path.join(cache, "stats", name))
        metrics.Evaluator(eval_args(labelled, **({} if fit is None else {"fit": fit})))
        assert len(stats_files(cache)) == len(resize_only) + (fit == "pad")


# ------------------------------------------------------------------ precision, recall, density, coverage, classes
def clusters(n_clusters, per_cluster, d=8, seed=0, spread=0.01):
    """Tight, far-apart clusters: centres on the axes at distance 100 (k-NN radii stay inside a cluster)."""
    rng = np.random.default_rng(seed)
    centres = 100.0 * np.eye(max(n_clusters, d))[:n_clusters, :d] if n_clusters <= d else \
        100.0 * rng.normal(size=(n_clusters, d))
    return np.concatenate([c + spread * rng.normal(size=(per_cluster, d)) for c in centres])


def test_identical_sets_score_one_everywhere():
    real = np.random.default_rng(1).normal(size=(300, 16))
    scores = metrics.manifold_metrics(real, real.copy(), k=5)
    assert (scores["precision"], scores["recall"], scores["coverage"]) == (1.0, 1.0, 1.0)
    # Ball i holds itself and its k - 1 nearest strictly: N k pairs, density 1. Its k-th neighbour sits on its
    # boundary, where float64 round-off (of two matrix products) may count it too: at most N more pairs.
    assert 1.0 <= scores["density"] < 1.0 + 1 / 5 * 0.1


def test_disjoint_sets_score_zero_everywhere():
    real = np.random.default_rng(2).normal(size=(200, 16))
    assert metrics.manifold_metrics(real, real + 1000.0, k=3) == dict(precision=0.0, recall=0.0, density=0.0,
                                                                      coverage=0.0)


def test_one_collapsed_mode_has_full_precision_and_a_tenth_of_recall_and_coverage():
    real = clusters(8, 20)  # 8 modes
    fake = real[:20] + 1e-4 * np.random.default_rng(3).normal(size=(20, 8))  # all of it near mode 0's images
    scores = metrics.manifold_metrics(real, fake, k=5)
    assert scores["precision"] == 1.0 and scores["recall"] == 1 / 8 and scores["coverage"] == 1 / 8
    assert 0.5 < scores["density"] < 2.0


def test_a_fake_set_covering_half_the_real_balls():
    real = clusters(8, 10, seed=4)
    fake = real[:40].copy()  # the points of 4 of the 8 clusters: their balls hold fakes, the others' none
    scores = metrics.manifold_metrics(real, fake, k=5)
    assert scores == dict(precision=1.0, recall=0.5, density=1.0, coverage=0.5)


def test_manifold_metrics_chunked_equal_a_direct_computation(monkeypatch):
    rng = np.random.default_rng(5)
    real, fake, k = rng.normal(size=(90, 6)), rng.normal(0.8, 0.7, size=(70, 6)), 4
    d_rr, d_ff, d_rf = (np.linalg.norm(a[:, None] - b[None], axis=2) for a, b in ((real, real), (fake, fake),
                                                                                    (real, fake)))
    r_real, r_fake = np.sort(d_rr, 1)[:, k], np.sort(d_ff, 1)[:, k]
    expected = dict(precision=(d_rf <= r_real[:, None]).any(0).mean(), recall=(d_rf <= r_fake[None]).any(1).mean(),
                    density=(d_rf < r_real[:, None]).sum() / (k * len(fake)),
                    coverage=(d_rf.min(1) < r_real).mean())
    chunks = metrics._distance_chunks
    monkeypatch.setattr(metrics, "_distance_chunks", lambda a, b: chunks(a, b, chunk_elements=7 * len(b)))
    scores = metrics.manifold_metrics(real, fake, k)  # 7 rows per chunk, so the last chunk is partial
    assert scores.keys() == expected.keys() and all(np.isclose(scores[m], expected[m]) for m in scores), scores
    assert 0 < scores["precision"] < 1 and 0 < scores["recall"] < 1


def test_manifold_metrics_need_more_than_k_vectors():
    with pytest.raises(ValueError, match="more than 5"):
        metrics.manifold_metrics(np.zeros((5, 2)), np.ones((9, 2)), k=5)


def test_class_coverage_counts_classes_and_kl():
    real = np.eye(10)[np.arange(1000) % 10]  # logits: a balanced real histogram
    assert metrics.class_coverage(real, real) == (10, 0.0)
    collapsed = np.eye(10)[np.full(500, 3)]
    covered, kl = metrics.class_coverage(collapsed, real)
    assert covered == 1 and np.isclose(kl, np.log(10))
    # Half the classes, equally: KL = log 2; a class with 0.5% of the samples (< 10% of its real 10%) is not covered.
    half = np.eye(10)[np.r_[np.arange(995) % 5, [7] * 5]]
    covered, kl = metrics.class_coverage(half, real)
    assert covered == 5 and 0.6 < kl < np.log(2) + 1e-9


def test_cli_prints_mode_metrics_with_network_k_and_counts(labelled, trained_cache, tmp_path, capsys):
    images = data.load_images("mnist", labelled, 32, 1, split="test")
    one_class = images[np.arange(len(images)) % 10 == 0]  # the test split's class 0 only: 20 images
    np.savez(tmp_path / "all.npz", images=images)
    np.savez(tmp_path / "one.npz", images=one_class)
    results = {}
    for name in ("all", "one"):
        code, out, err = run_main(capsys, str(tmp_path / f"{name}.npz"), "--dataset", "mnist", "--data_dir", labelled,
                                  "--cache_dir", trained_cache, "--k", "3", "--metric", "classifier_precision",
                                  "classifier_recall", "classifier_coverage", "classes")
        assert code == 0, err
        lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
        assert list(lines) == ["classifier_precision", "classifier_recall", "classifier_coverage", "classes",
                               "classes_kl"]
        n = len(images) if name == "all" else len(one_class)
        for metric, line in lines.items():
            assert f"{n} fake vs 600 real" in line and "classifier" in line, line
            assert metric.startswith("classes") or "k 3" in line
        results[name] = {m: float(v.split()[0]) for m, v in lines.items()}
    # One class of ten: recall, coverage and classes collapse, the KL grows (log 10 for a perfect classifier).
    assert results["all"]["classifier_recall"] > 3 * results["one"]["classifier_recall"]
    assert results["all"]["classifier_coverage"] > 3 * results["one"]["classifier_coverage"]
    assert results["one"]["classes"] <= 2 < 5 <= results["all"]["classes"]  # a classifier of 2 epochs on 600
    assert results["all"]["classes_kl"] < 0.2 < 0.5 < results["one"]["classes_kl"]


def test_evaluator_logs_extra_metrics_beside_the_one_it_minimises(labelled, trained_cache, monkeypatch):
    monkeypatch.setenv("GAN_CACHE", trained_cache)
    generator = ops.make_generator(32, 1, 16, 8)
    logger = FakeLogger()
    args = eval_args(labelled, eval_extra=["classifier_recall", "classes"])
    value = metrics.Evaluator(args)(generator, 3, logger)
    (step, logged), = logger.scalars_calls
    assert list(logged) == ["eval/classifier_fd", "eval/classifier_recall", "eval/classes", "eval/classes_kl"]
    assert value == logged["eval/classifier_fd"] and 0 <= logged["eval/classifier_recall"] <= 1
    with pytest.raises(common.RunError, match="labelled"):
        metrics.Evaluator(eval_args(labelled, dataset="cifar10", metric="fid", eval_extra=["classes"]))

"""Tests for inception.py: the FID Inception graph, on small graphs built here with its interface (the real one is
a 90 MB download; benchmarks/gpu_check.sh loads it through the same code online). Nothing here can reach the
network."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
import inception  # noqa: E402
from inception_graphs import FEATURE_DIM, make_archive, pin, toy_features  # noqa: E402
import inception_graphs  # noqa: E402


@pytest.fixture(scope="module")
def toy_graph(tmp_path_factory):
    return inception_graphs.toy_graph(tmp_path_factory.mktemp("inception"))


def test_inception_features_and_logits_of_a_batch(toy_graph):
    path, params, weights = toy_graph
    features, _ = inception.inception_network(path=path)
    images = np.random.default_rng(7).integers(0, 256, (6, 12, 12, 1), dtype=np.uint8)  # gray: tiled to RGB
    pool3, logits = features(images)
    np.testing.assert_allclose(pool3, toy_features(images, params), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, pool3 @ weights, rtol=1e-4, atol=1e-5)


def test_an_archive_is_checked_against_the_pinned_size_and_hash(toy_graph, tmp_path, monkeypatch):
    archive = make_archive(tmp_path, toy_graph[0])
    with pytest.raises(common.RunError, match="not the 88931400 bytes|bytes, not the"):
        inception.inception_network(path=str(archive))  # the real archive's size: this one is refused
    pin(monkeypatch, archive)
    features, _ = inception.inception_network(path=str(archive))
    assert features(np.zeros((2, 8, 8, 3), np.uint8))[0].shape == (2, FEATURE_DIM)
    monkeypatch.setattr(inception, "INCEPTION_SHA256", "0" * 64)
    with pytest.raises(common.RunError, match="SHA-256"):
        inception.inception_network(path=str(archive))


def test_the_archive_is_downloaded_once_into_the_cache(toy_graph, tmp_path, monkeypatch):
    archive = make_archive(tmp_path, toy_graph[0])
    pin(monkeypatch, archive)
    monkeypatch.setattr(inception, "INCEPTION_URL", archive.as_uri())  # file:// - urllib's download path, offline
    cache = tmp_path / "cache"
    inception.inception_network(cache_dir=str(cache))
    assert (cache / archive.name).read_bytes() == archive.read_bytes()
    archive.unlink()  # the second call must not download again
    inception.inception_network(cache_dir=str(cache))

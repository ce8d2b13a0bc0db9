"""Tests for inception.py: the FID Inception graph, on small graphs built here with its interface (the real one is
a 90 MB download; benchmarks/gpu_check.sh loads it through the same code online). Nothing here can reach the
network."""
import io
import os
import shutil
import sys
import tarfile
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
import inception  # noqa: E402
import metrics  # noqa: E402
from conftest import cli_in_process  # noqa: E402
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


# --------------------------------------------------------------------- the graph is checked before anything runs
def load_and_score(**where):
    """What metrics.make_scorer does with the graph: load it, then compute features (which runs it)."""
    features, _ = inception.inception_network(**where)
    features(np.zeros((2, 8, 8, 3), np.uint8))


def one_sentence(error):
    message = str(error)
    return message.count(". ") == 0 and "\n" not in message and message.endswith(".")


def test_the_original_graphs_layout_passes_the_check(toy_graph):
    # The 2015 graph guards every layer with CheckNumerics, stateful in TensorFlow's op registry; it only raises
    # on NaN or Inf, so the check lets it through: this graph has it where the original has it.
    features, _ = inception.inception_network(path=toy_graph[0])
    images = np.random.default_rng(9).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    np.testing.assert_allclose(features(images)[0], toy_features(images, toy_graph[1]), rtol=1e-4, atol=1e-5)


def write_file(marker):
    def tamper(x):
        written = tf.io.write_file(str(marker), "written by the graph", name="hostile/WriteFile")
        with tf.control_dependencies([written]):  # pool_3 waits for it, so it would run
            return tf.identity(x)
    return tamper


def python_function(x):
    y = tf.compat.v1.py_func(lambda a: a, [x], tf.float32, name="hostile/PyFunc")
    y.set_shape(x.shape)
    return y


def print_op(x):
    return tf.compat.v1.Print(x, [tf.shape(x)], "the graph prints ", name="hostile/Print")


def random_op(x):
    return x + 0.0 * tf.random.uniform(tf.shape(x), name="hostile/RandomUniform")


def function_call(x):
    return tf.function(lambda t: t * 1.0)(x)


@pytest.mark.parametrize("tamper, op", [(python_function, "PyFunc"), (print_op, "Print"),
                                        (random_op, "RandomUniform"), (function_call, "function library")])
def test_a_graph_with_a_hostile_op_on_the_path_is_refused_naming_it(tamper, op, tmp_path, capfd):
    path, _, _ = inception_graphs.toy_graph(tmp_path, tamper)
    with pytest.raises(common.RunError, match=op) as e:
        load_and_score(path=path)
    assert one_sentence(e.value) and path in str(e.value), e.value
    assert "the graph prints" not in capfd.readouterr().err


def test_a_graph_that_writes_a_file_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "written"
    path, _, _ = inception_graphs.toy_graph(tmp_path, write_file(marker))
    with pytest.raises(common.RunError, match="WriteFile") as e:
        load_and_score(path=path)
    assert one_sentence(e.value), e.value
    assert not marker.exists()


def test_an_op_unknown_to_tensorflow_is_refused(toy_graph, tmp_path):
    graph_def = tf.compat.v1.GraphDef.FromString(open(toy_graph[0], "rb").read())
    next(node for node in graph_def.node if node.name == "mixed/join").op = "LaunchMissiles"
    (tmp_path / "unknown.pb").write_bytes(graph_def.SerializeToString())
    with pytest.raises(common.RunError, match="LaunchMissiles") as e:
        inception.inception_network(path=str(tmp_path / "unknown.pb"))
    assert one_sentence(e.value), e.value


def test_an_op_that_calls_a_function_is_refused_without_a_library(tmp_path):
    path, _, _ = inception_graphs.toy_graph(tmp_path, function_call)
    graph_def = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())
    graph_def.library.Clear()  # the call names a function the graph does not carry
    assert [node.op for node in graph_def.node if "Call" in node.op] == ["PartitionedCall"]  # not stateful
    (tmp_path / "call.pb").write_bytes(graph_def.SerializeToString())
    with pytest.raises(common.RunError, match="PartitionedCall, an op that calls a function") as e:
        load_and_score(path=str(tmp_path / "call.pb"))
    assert one_sentence(e.value), e.value


def test_nodes_the_fetched_tensors_do_not_need_are_pruned_unrun(tmp_path):
    # A WriteFile upstream of the fed ExpandDims (on the JPEG path) or downstream of the fetched tensors (on the
    # softmax) is not part of what runs: the graph passes and the file is never written.
    markers = tmp_path / "upstream", tmp_path / "downstream"
    params, weights = inception_graphs.toy_params()
    graph_def = inception_graphs.toy_graph_def(params, weights)
    with tf.Graph().as_default() as g:
        for marker in markers:
            tf.io.write_file(str(marker), "written", name=f"{marker.name}/WriteFile")
    graph_def.node.extend(n for n in g.as_graph_def().node)
    for name, consumer in zip(markers, ("Cast", "softmax")):
        next(n for n in graph_def.node if n.name == consumer).input.append(f"^{name.name}/WriteFile")
    (tmp_path / "pruned.pb").write_bytes(graph_def.SerializeToString())
    features, _ = inception.inception_network(path=str(tmp_path / "pruned.pb"))
    features(np.zeros((2, 8, 8, 3), np.uint8))
    assert not any(marker.exists() for marker in markers)


@pytest.mark.parametrize("op", ["WriteFile", "ReadFile", "MatchingFiles", "Save", "SaveV2", "RestoreV2", "PyFunc",
                                "EagerPyFunc", "PyFuncStateless", "Print", "PrintV2", "TFRecordReaderV2",
                                "WholeFileReaderV2", "ReaderReadV2", "DecodeProtoV2", "EncodeProto",
                                "ImmutableConst", "DebugIdentity", "TFRecordDataset"])
def test_file_process_network_printing_and_python_ops_are_denied(op):
    assert inception.refused_op(op)


def test_the_ops_of_the_original_graph_are_allowed():
    for op in ("Placeholder", "Const", "ResizeBilinear", "Sub", "Mul", "Conv2D", "BatchNormWithGlobalNormalization",
               "CheckNumerics", "Identity", "Relu", "MaxPool", "AvgPool", "Concat", "Reshape", "MatMul"):
        assert not inception.refused_op(op), op


# ------------------------------------------------------------------------------- the archive and its sources
def test_the_download_uses_https():
    assert inception.INCEPTION_URL.startswith("https://download.tensorflow.org/")


def test_a_download_redirected_off_https_is_refused(tmp_path, monkeypatch):
    class Redirected(io.BytesIO):
        def geturl(self):
            return "http://example.com/inception-2015-12-05.tgz"
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Redirected(b"not fetched"))
    with pytest.raises(common.RunError, match="http://example.com") as e:
        inception.inception_network(cache_dir=str(tmp_path / "cache"))
    assert one_sentence(e.value), e.value
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_an_archive_member_that_is_not_a_regular_file_is_refused(kind, tmp_path, monkeypatch):
    archive = tmp_path / "inception-2015-12-05.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("classify_image_graph_def.pb")
        member.type, member.linkname = (tarfile.DIRTYPE, "") if kind == "directory" else (tarfile.SYMTYPE,
                                                                                           "/etc/passwd")
        tar.addfile(member)
    pin(monkeypatch, archive)
    with pytest.raises(common.RunError, match=kind) as e:
        inception.inception_network(path=str(archive))
    assert one_sentence(e.value) and str(archive) in str(e.value), e.value


def test_an_archive_without_the_graph_is_refused(toy_graph, tmp_path, monkeypatch):
    archive = make_archive(tmp_path, toy_graph[0], name="other/classify_image_graph_def.pb")
    pin(monkeypatch, archive)
    with pytest.raises(common.RunError, match="no classify_image_graph_def.pb") as e:
        inception.inception_network(path=str(archive))
    assert one_sentence(e.value), e.value


def test_a_graph_larger_than_the_original_could_be_is_refused_unread(toy_graph, tmp_path, monkeypatch):
    archive = make_archive(tmp_path, toy_graph[0])
    pin(monkeypatch, archive)
    monkeypatch.setattr(inception, "MAX_GRAPH_BYTES", 1000)
    for path in (archive, toy_graph[0]):
        with pytest.raises(common.RunError, match="larger than") as e:
            inception.inception_network(path=str(path))
        assert one_sentence(e.value), e.value


def hostile_archive(tmp_path, monkeypatch, marker):
    """An archive of a graph that writes `marker`, padded with zero bytes (which gzip ignores) to the size the
    size check wants."""
    path, _, _ = inception_graphs.toy_graph(tmp_path, write_file(marker))
    archive = make_archive(tmp_path, path)
    size = archive.stat().st_size
    monkeypatch.setattr(inception, "INCEPTION_BYTES", size + 4096)
    with open(archive, "ab") as f:
        f.write(bytes(4096))
    return archive


def test_a_padded_hostile_archive_in_a_shared_cache_is_refused_unrun(tmp_path, monkeypatch):
    marker = tmp_path / "written"
    archive = hostile_archive(tmp_path, monkeypatch, marker)
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(archive, cache / archive.name)  # left there by someone else, e.g. in a shared $GAN_CACHE
    with pytest.raises(common.RunError, match="WriteFile") as e:
        load_and_score(cache_dir=str(cache))
    assert one_sentence(e.value), e.value
    assert not marker.exists() and (cache / archive.name).read_bytes() == archive.read_bytes()


def test_a_hostile_download_is_refused_and_not_kept(tmp_path, monkeypatch):
    marker = tmp_path / "written"
    archive = hostile_archive(tmp_path, monkeypatch, marker)
    monkeypatch.setattr(inception, "INCEPTION_URL", archive.as_uri())
    with pytest.raises(common.RunError, match="WriteFile"):
        load_and_score(cache_dir=str(tmp_path / "cache"))
    assert not marker.exists() and os.listdir(tmp_path / "cache") == []


def test_metrics_cli_refuses_a_hostile_pb_given_with_inception(tiny_fashion, tmp_path, capsys):
    marker = tmp_path / "written"
    path, _, _ = inception_graphs.toy_graph(tmp_path, write_file(marker))
    np.savez(tmp_path / "fake.npz", images=np.zeros((4, 16, 16, 1), np.uint8))
    code, out, err = cli_in_process(metrics.main, [tmp_path / "fake.npz", "--dataset", "fashion_mnist", "--data_dir",
                                                   tiny_fashion, "--metric", "fid", "--inception", path,
                                                   "--cache_dir", tmp_path / "cache"], capsys)  # metrics.py ARGS
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert "WriteFile" in err and path in err and not marker.exists()

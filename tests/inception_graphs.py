"""Small GraphDefs with the FID Inception graph's interface, and archives of them, for test_inception.py and
test_metrics.py: the real graph (inception-2015-12-05) is 90 MB behind a download, so the tests build their own."""
import hashlib
import tarfile

import numpy as np
import tensorflow as tf

import inception

FEATURE_DIM, CLASSES = 8, 5


def toy_graph(folder, seed=6):
    """A classify_image_graph_def.pb in `folder` with the FID graph's interface and quirks: input 'ExpandDims:0'
    (float [0, 255], any size, batch 1 in the file, after a JPEG decoder), BatchNormWithGlobalNormalization after
    the convolution (an op removed in GraphDef version 9, so the file says version 3 like the original), output
    'pool_3' [N, 1, 1, d], and 'softmax/logits/MatMul' whose second input holds the softmax weights.
    -> (path, params for toy_features, softmax weights)."""
    rng = np.random.default_rng(seed)
    params = dict(kernel=rng.normal(size=(3, 3, 3, FEATURE_DIM)), mean=rng.normal(size=FEATURE_DIM),
                  var=rng.uniform(0.5, 2, FEATURE_DIM), beta=rng.normal(size=FEATURE_DIM),
                  gamma=rng.uniform(0.5, 2, FEATURE_DIM))
    params = {k: v.astype(np.float32) for k, v in params.items()}
    weights = rng.normal(size=(FEATURE_DIM, CLASSES)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        # As in the original: JPEG bytes -> DecodeJpeg -> Cast -> ExpandDims; metrics.py feeds ExpandDims:0.
        jpeg = tf.io.decode_jpeg(tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents"), 3)
        x = tf.expand_dims(tf.cast(jpeg, tf.float32, name="Cast"), 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [16, 16]) / 128.0 - 1.0
        x = tf.nn.conv2d(x, params["kernel"], 1, "SAME", name="conv")
        bn_inputs = [tf.constant(params[k], name=f"conv/{k}") for k in ("mean", "var", "beta", "gamma")]
        x = tf.nn.relu(tf.identity(x, name="conv/batchnorm"))  # becomes the old batch norm op below
        pool = tf.reduce_mean(x, [1, 2], keepdims=True, name="pool_3")
        flat = tf.reshape(pool, [1, FEATURE_DIM], name="pool_3/_reshape")
        tf.matmul(flat, tf.constant(weights, name="softmax/weights"), name="softmax/logits/MatMul")
    graph_def = graph.as_graph_def()
    graph_def.versions.producer = 3
    bn = next(node for node in graph_def.node if node.name == "conv/batchnorm")
    bn.op = "BatchNormWithGlobalNormalization"
    bn.input.extend(t.op.name for t in bn_inputs)
    bn.attr["variance_epsilon"].f = 1e-3
    bn.attr["scale_after_normalization"].b = True
    path = folder / "classify_image_graph_def.pb"
    path.write_bytes(graph_def.SerializeToString())
    return str(path), params, weights


def toy_features(images, p):
    """pool_3 of toy_graph's graph, computed here in TF2 ops."""
    x = tf.cast(tf.tile(images, [1, 1, 1, 3]) if images.shape[-1] == 1 else images, tf.float32)
    x = tf.nn.conv2d(tf.compat.v1.image.resize_bilinear(x, [16, 16]) / 128.0 - 1.0, p["kernel"], 1, "SAME")
    x = (x - p["mean"]) / np.sqrt(p["var"] + 1e-3) * p["gamma"] + p["beta"]
    return tf.reduce_mean(tf.nn.relu(x), [1, 2]).numpy()


def make_archive(tmp_path, pb_path):
    archive = tmp_path / "inception-2015-12-05.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(pb_path, arcname="classify_image_graph_def.pb")
    return archive


def pin(monkeypatch, archive):
    """Make `archive` pass the size and SHA-256 checks of the official one."""
    monkeypatch.setattr(inception, "INCEPTION_BYTES", archive.stat().st_size)
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())

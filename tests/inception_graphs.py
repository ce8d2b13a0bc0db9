"""Small GraphDefs with the FID Inception graph's interface and structure, and archives of them, for
test_inception.py and test_metrics.py: the real graph (inception-2015-12-05) is a 90 MB download, so the tests
build their own."""
import hashlib
import tarfile

import numpy as np
import tensorflow as tf

import inception

FEATURE_DIM, CLASSES = 8, 5
LAYERS = {"conv": (3, 3, 4), "conv_1": (3, 4, 4), "conv_2": (1, 4, 4)}  # kernel size, in, out channels


def toy_params(seed=6):
    """Each layer's kernel and batch-norm constants, and the softmax weights [FEATURE_DIM, CLASSES]."""
    rng = np.random.default_rng(seed)
    params = {name: dict(kernel=rng.normal(size=(k, k, c_in, c_out)), moving_mean=rng.normal(size=c_out),
                         moving_variance=rng.uniform(0.5, 2, c_out), beta=rng.normal(size=c_out),
                         gamma=rng.uniform(0.5, 2, c_out))
              for name, (k, c_in, c_out) in LAYERS.items()}
    params = {name: {k: v.astype(np.float32) for k, v in p.items()} for name, p in params.items()}
    return params, rng.normal(size=(FEATURE_DIM, CLASSES)).astype(np.float32)


def toy_graph_def(params, weights, tamper=None):
    """A GraphDef laid out as the 2015-12-05 graph: JPEG bytes -> DecodeJpeg -> Cast -> ExpandDims (where metrics
    feeds float [0, 255] images of any size; batch 1 in the file) -> ResizeBilinear -> Sub -> Mul; per layer
    Conv2D -> BatchNormWithGlobalNormalization (removed in GraphDef version 9, so the file says version 3 like the
    original) -> CheckNumerics and an Identity 'control_dependency' that waits for it -> Relu; MaxPool 'pool',
    two towers joined by Concat 'mixed/join', AvgPool 'pool_3' [N, 1, 1, d], 'pool_3/_reshape' (batch 1), and
    'softmax/logits/MatMul' whose second input holds the softmax weights, then a bias and Softmax.
    tamper(x) -> x inserts nodes just before pool_3."""
    graph = tf.Graph()
    with graph.as_default():
        jpeg = tf.io.decode_jpeg(tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents"), 3)
        x = tf.expand_dims(tf.cast(jpeg, tf.float32, name="Cast"), 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [16, 16], name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1 / 128.0, name="Mul")
        x = _layer(x, "conv", params["conv"])
        x = tf.nn.max_pool2d(_checked(x, "pool"), 3, 2, "SAME", name="pool")  # 16x16 -> 8x8
        x = tf.compat.v1.concat([_layer(x, "conv_1", params["conv_1"]), _layer(x, "conv_2", params["conv_2"])], 3,
                                name="mixed/join")
        if tamper:
            x = tamper(x)
        pool = tf.nn.avg_pool2d(x, 8, 1, "VALID", name="pool_3")
        flat = tf.reshape(pool, [1, FEATURE_DIM], name="pool_3/_reshape")
        logits = tf.matmul(flat, tf.constant(weights, name="softmax/weights"), name="softmax/logits/MatMul")
        tf.nn.softmax(tf.add(logits, tf.zeros([CLASSES], name="softmax/biases"), name="softmax/logits"),
                      name="softmax")
    graph_def = graph.as_graph_def()
    graph_def.versions.producer = 3
    for node in graph_def.node:
        if node.name.endswith("/batchnorm"):  # an Identity above: the op the original uses, with its inputs
            node.op = "BatchNormWithGlobalNormalization"
            node.input.extend(f"{node.name}/{k}" for k in ("moving_mean", "moving_variance", "beta", "gamma"))
            node.attr["variance_epsilon"].f = 1e-3
            node.attr["scale_after_normalization"].b = True
    return graph_def


def _checked(x, name):
    """x after CheckNumerics, as the original guards each layer: an Identity with a control input."""
    check = tf.debugging.check_numerics(x, f"{name} has NaN or Inf", name=f"{name}/CheckNumerics")
    with tf.control_dependencies([check]):
        return tf.identity(x, name=f"{name}/control_dependency")


def _layer(x, name, p):
    x = tf.nn.conv2d(x, tf.constant(p["kernel"], name=f"{name}/conv2d_params"), 1, "SAME", name=f"{name}/Conv2D")
    for k in ("moving_mean", "moving_variance", "beta", "gamma"):
        tf.constant(p[k], name=f"{name}/batchnorm/{k}")
    x = tf.identity(x, name=f"{name}/batchnorm")  # becomes BatchNormWithGlobalNormalization in toy_graph_def
    return tf.nn.relu(_checked(x, name), name=name)


def toy_features(images, params):
    """pool_3 of toy_graph_def's graph for uint8 NHWC images, computed here with TF2 ops."""
    def layer(x, p):
        x = tf.nn.conv2d(x, p["kernel"], 1, "SAME")
        return tf.nn.relu((x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) * p["gamma"] + p["beta"])
    x = tf.cast(tf.tile(images, [1, 1, 1, 3]) if images.shape[-1] == 1 else images, tf.float32)
    x = (tf.compat.v1.image.resize_bilinear(x, [16, 16]) - 128.0) * (1 / 128.0)
    x = tf.nn.max_pool2d(layer(x, params["conv"]), 3, 2, "SAME")
    x = tf.concat([layer(x, params["conv_1"]), layer(x, params["conv_2"])], 3)
    return tf.reduce_mean(x, [1, 2]).numpy()


def toy_graph(folder, tamper=None, seed=6):
    """toy_graph_def's graph written to folder/classify_image_graph_def.pb -> (path, params, softmax weights)."""
    params, weights = toy_params(seed)
    path = folder / "classify_image_graph_def.pb"
    path.write_bytes(toy_graph_def(params, weights, tamper).SerializeToString())
    return str(path), params, weights


def make_archive(folder, pb_path, name="classify_image_graph_def.pb"):
    """folder/inception-2015-12-05.tgz holding pb_path as `name`."""
    archive = folder / "inception-2015-12-05.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(pb_path, arcname=name)
    return archive


def pin(monkeypatch, archive):
    """Make `archive` pass the size and SHA-256 checks of the official one."""
    monkeypatch.setattr(inception, "INCEPTION_BYTES", archive.stat().st_size)
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())

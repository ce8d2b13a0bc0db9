"""The FID Inception network: pool_3 (2048-d) of the 2015-12-05 Inception graph, as in the original FID code
(TTUR) and TF-GAN, loaded in TF2.

The archive is downloaded once into the metrics' cache (metrics.py: --cache_dir, $GAN_CACHE) or given as a local
copy (metrics.py --inception: the archive, its classify_image_graph_def.pb, or a folder holding either).
inception_network() returns the feature function metrics.make_scorer uses for fid, kid, is and the manifold
metrics; the score math stays in metrics.py.
"""
import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request

import tensorflow as tf

import common
import files

INCEPTION_URL = "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
INCEPTION_BYTES = 88_931_400  # the archive's size as logged by TF's classify_image.py ("Successfully downloaded")
INCEPTION_SHA256 = None  # no published SHA-256 was found; pin `sha256sum inception-2015-12-05.tgz` here


def _archive(cache_dir):
    """Path of the checked inception-2015-12-05.tgz in the cache, downloading it once."""
    path = os.path.join(cache_dir, os.path.basename(INCEPTION_URL))
    if not os.path.isfile(path):
        print(f"downloading the FID Inception graph from {INCEPTION_URL} ...", file=sys.stderr)
        try:
            with files.atomic_path(path) as tmp:  # checked before it takes the archive's name
                with urllib.request.urlopen(INCEPTION_URL, timeout=60) as response, open(tmp, "wb") as f:
                    shutil.copyfileobj(response, f, 1 << 20)
                digest = _check_archive(tmp)
        except OSError as e:  # URLError, timeouts and refused connections are OSErrors
            raise common.RunError(
                f"the FID Inception network is not in {cache_dir} and could not be downloaded "
                f"({getattr(e, 'reason', e)}); download {INCEPTION_URL} on a machine with internet and pass "
                f"--inception PATH_TO_THE_TGZ, or copy it into {cache_dir}.") from None
        if not INCEPTION_SHA256:
            print(f"its SHA-256 is {digest} (inception.INCEPTION_SHA256 pins none yet)", file=sys.stderr)
    return path


def _check_archive(path):
    """Refuse an archive whose size (published) or SHA-256 (once pinned) is not the official one; -> SHA-256."""
    size = os.path.getsize(path)
    if size != INCEPTION_BYTES:
        raise common.RunError(f"{path} has {size} bytes, not the {INCEPTION_BYTES} of the official "
                              f"inception-2015-12-05.tgz; delete it and download {INCEPTION_URL} again.")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if INCEPTION_SHA256 and digest != INCEPTION_SHA256:
        raise common.RunError(f"{path} has SHA-256 {digest}, not the pinned {INCEPTION_SHA256}; delete it and "
                              f"download {INCEPTION_URL} again.")
    return digest


def _read_graph_def(path):
    """GraphDef from a classify_image_graph_def.pb, an archive holding one, or a folder holding either."""
    if os.path.isdir(path):
        names = ("classify_image_graph_def.pb", os.path.basename(INCEPTION_URL))
        path = next((os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))), path)
    if not os.path.isfile(path):
        raise common.RunError(f"--inception {path} is neither classify_image_graph_def.pb nor "
                              "inception-2015-12-05.tgz (nor a folder holding one).")
    try:
        if path.endswith((".tgz", ".tar.gz")):
            _check_archive(path)
            with tarfile.open(path, "r:gz") as tar:
                member = next(m for m in tar if m.name.endswith("classify_image_graph_def.pb"))
                raw = tar.extractfile(member).read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
        graph_def = tf.compat.v1.GraphDef.FromString(raw)
    except (OSError, StopIteration, tarfile.TarError, ValueError) as e:  # DecodeError is a ValueError subclass
        raise common.RunError(f"{path} is not a readable Inception graph ({type(e).__name__}).") from None
    names = {node.name for node in graph_def.node}
    if not {"ExpandDims", "pool_3"} <= names:
        raise common.RunError(f"{path} has no 'ExpandDims' input and 'pool_3' output; it is not the FID graph.")
    return graph_def, hashlib.sha256(raw).hexdigest()[:16], "softmax/logits/MatMul" in names


def _replace_removed_batch_norm(graph_def):
    """The same graph with BatchNormWithGlobalNormalization (removed in GraphDef version 9) spelled in current ops.

    The 2015 graph uses it after every convolution. A TF1 session runs it because importing lowers the session
    graph's version to the file's, but a tf.function runs at TF's current version and refuses it. The kernel
    computes (t - mean) * rsqrt(var + eps) [* gamma] + beta; so do these nodes, under the same output name.
    """
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op != "BatchNormWithGlobalNormalization":
            out.node.add().CopyFrom(node)
            continue
        t, mean, var, beta, gamma = node.input[:5]
        dtype, name = node.attr["T"], node.name

        def add(op, suffix, *inputs):
            new = out.node.add(name=f"{name}/fid_{suffix}" if suffix else name, op=op, input=inputs)
            new.attr["T"].CopyFrom(dtype)
        eps = out.node.add(name=f"{name}/fid_eps", op="Const")
        eps.attr["dtype"].type = dtype.type
        eps.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(node.attr["variance_epsilon"].f,
                                                               tf.dtypes.as_dtype(dtype.type)))
        add("AddV2", "var_eps", var, eps.name)
        add("Rsqrt", "rsqrt", f"{name}/fid_var_eps")
        scale = f"{name}/fid_rsqrt"
        if node.attr["scale_after_normalization"].b:
            add("Mul", "scale", scale, gamma)
            scale = f"{name}/fid_scale"
        add("Sub", "centred", t, mean)
        add("Mul", "scaled", f"{name}/fid_centred", scale)
        add("AddV2", "", f"{name}/fid_scaled", beta)
        out.node[-1].input.extend(node.input[5:])  # control inputs, if any
    return out


def inception_network(cache_dir=None, path=None):
    """-> (features(images uint8 NHWC) -> (pool_3 [N, 2048], logits [N, 1008] or None), id of the graph).

    `path` is a local copy (the archive, its .pb, or a folder holding either); without one the archive is read
    from `cache_dir`, downloaded there once."""
    if path is None and cache_dir is None:
        raise ValueError("inception_network needs a local copy (path) or a cache folder (cache_dir)")
    graph_def, graph_id, has_logits = _read_graph_def(path or _archive(cache_dir))
    graph_def = _replace_removed_batch_norm(graph_def)

    def imported(images):
        # Feed float [0, 255] images of any size at ExpandDims:0, as TTUR's fid.py does; the graph resizes them
        # to 299x299 (bilinear) and scales them to [-1, 1] itself.
        pool3, = tf.compat.v1.import_graph_def(graph_def, input_map={"ExpandDims:0": images},
                                               return_elements=["pool_3:0"], name="inception")
        pool3 = tf.reshape(pool3, [tf.shape(images)[0], -1])  # [N, 1, 1, 2048] -> [N, 2048]
        if not has_logits:
            return pool3, tf.zeros([tf.shape(images)[0], 0])
        # The original IS code: pool_3 times the softmax layer's weights, without its bias.
        weights = tf.compat.v1.get_default_graph().get_operation_by_name("inception/softmax/logits/MatMul").inputs[1]
        return pool3, tf.matmul(pool3, weights)

    run = tf.compat.v1.wrap_function(imported, [tf.TensorSpec([None, None, None, 3], tf.float32)])

    def features(images):
        x = tf.cast(images, tf.float32)
        out = run(tf.tile(x, [1, 1, 1, 3]) if x.shape[-1] == 1 else x)  # grayscale -> RGB
        return out[0].numpy(), (out[1].numpy() if has_logits else None)
    return features, graph_id

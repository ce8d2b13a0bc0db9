"""The FID Inception network: pool_3 (2048-d) of the 2015-12-05 Inception graph, as in the original FID code
(TTUR) and TF-GAN, loaded in TF2, and checked before anything in it runs.

The archive is downloaded once over https into the metrics' cache (metrics.py: --cache_dir, $GAN_CACHE) or given as
a local copy (metrics.py --inception: the archive, its classify_image_graph_def.pb, or a folder holding either).
inception_network() returns the feature function metrics.make_scorer uses for fid, kid, is and the manifold
metrics; the score math stays in metrics.py.

A graph from any of these sources (a download, a shared cache, a file someone hands you) is checked the same way:
  - an archive has the official size (and SHA-256, once pinned), and classify_image_graph_def.pb in it is a regular
    file of at most MAX_GRAPH_BYTES;
  - the GraphDef carries no function library;
  - it is pruned to what the fetched tensors (pool_3, and the logits MatMul whose weights the Inception Score
    reads) depend on through inputs and control inputs, the fed ExpandDims a leaf: nothing upstream of the fed
    images, and nothing the fetched tensors do not need, is imported at all;
  - every op left is known to TensorFlow's op registry, is not stateful there (but for STATEFUL_ALLOWED), has no
    function-valued attribute and is not of a family that reaches files, processes, the network, the console or
    Python (DENIED).
The size check alone proves little (gzip ignores trailing zero bytes, so a padded archive can have any size); the
graph check is what makes a hostile archive harmless: a graph that passes holds arithmetic on the fed images and
its constants (and NaN checks), and nothing else runs.
"""
import hashlib
import os
import posixpath
import sys
import tarfile
import urllib.parse
import urllib.request
import zlib

import tensorflow as tf
from tensorflow.python.framework import op_def_registry

import common
import files

INCEPTION_URL = "https://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
INCEPTION_BYTES = 88_931_400  # the archive's size as logged by TF's classify_image.py ("Successfully downloaded")
INCEPTION_SHA256 = None  # no published SHA-256 was found; pin `sha256sum inception-2015-12-05.tgz` here
GRAPH_FILE = "classify_image_graph_def.pb"  # the archive member TF's classify_image.py and TTUR's fid.py read
MAX_GRAPH_BYTES = 1 << 28  # 256 MiB, well above the 2015 graph's size; a larger member is not read
FED = "ExpandDims"  # metrics feeds float [0, 255] images of any size at ExpandDims:0, as TTUR's fid.py does
FETCHED = ("pool_3", "softmax/logits/MatMul")  # FID/KID features; the IS reads the MatMul's weights
# Stateful in the registry, harmless here: CheckNumerics only fails on NaN or Inf (the registry calls it stateful
# so that optimisers keep it), and the 2015 graph guards every layer with one, which pool_3 waits for.
STATEFUL_ALLOWED = ("CheckNumerics",)
# Op families that reach files (WriteFile, ReadFile, MatchingFiles, Save*, Restore*, *Reader*, ImmutableConst's
# memory-mapped file, vocabulary files), Python (PyFunc, EagerPyFunc, PyFuncStateless), the console (Print,
# PrintV2), the network (Send, Recv, collectives, RPC, Debug* ops' debug URLs) or proto descriptors read from a
# file (DecodeProto, EncodeProto): refused by name whether or not the registry calls them stateful.
DENIED = ("File", "Save", "Restore", "Reader", "Dataset", "Iterator", "Checkpoint", "Immutable", "Vocab", "PyFunc",
          "Print", "Send", "Recv", "Collective", "Rpc", "Debug", "Proto")


def _archive(cache_dir):
    """Path of inception-2015-12-05.tgz in the cache, downloaded there once over https and checked before it takes
    its name (an archive already there is checked when it is read)."""
    path = os.path.join(cache_dir, os.path.basename(INCEPTION_URL))
    if not os.path.isfile(path):
        print(f"downloading the FID Inception graph from {INCEPTION_URL} ...", file=sys.stderr)
        try:
            with files.atomic_path(path) as tmp:
                with urllib.request.urlopen(INCEPTION_URL, timeout=60) as response, open(tmp, "wb") as f:
                    where = response.geturl()
                    if urllib.parse.urlsplit(where).scheme != urllib.parse.urlsplit(INCEPTION_URL).scheme:
                        raise common.RunError(f"the download of {INCEPTION_URL} was redirected to {where}; fetch "
                                              "the archive where you trust the connection and pass --inception PATH.")
                    while f.tell() <= INCEPTION_BYTES and (chunk := response.read(1 << 20)):
                        f.write(chunk)  # a longer body stops a chunk past the official size, refused below
                name = f"the archive downloaded from {INCEPTION_URL}"
                digest = _check_archive(tmp, name)
                _read_graph_def(tmp, name, archive=True)  # the graph too: a hostile download is not kept
        except OSError as e:  # URLError, timeouts and refused connections are OSErrors
            raise common.RunError(
                f"the FID Inception network is not in {cache_dir} and could not be downloaded "
                f"({getattr(e, 'reason', e)}); download {INCEPTION_URL} on a machine with internet and pass "
                f"--inception PATH_TO_THE_TGZ, or copy it into {cache_dir}.") from None
        if not INCEPTION_SHA256:
            print(f"its SHA-256 is {digest} (inception.INCEPTION_SHA256 pins none yet)", file=sys.stderr)
    return path


def _check_archive(path, name):
    """Refuse an archive whose size (published) or SHA-256 (once pinned) is not the official one; -> SHA-256.
    `name` is what messages call it."""
    size = os.path.getsize(path)
    if size != INCEPTION_BYTES:
        raise common.RunError(f"{name} has {size} bytes, not the {INCEPTION_BYTES} of the official "
                              f"inception-2015-12-05.tgz; delete it and download {INCEPTION_URL} again.")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if INCEPTION_SHA256 and digest != INCEPTION_SHA256:
        raise common.RunError(f"{name} has SHA-256 {digest}, not the pinned {INCEPTION_SHA256}; delete it and "
                              f"download {INCEPTION_URL} again.")
    return digest


def _graph_bytes(path, name, archive):
    """The bytes of classify_image_graph_def.pb: the file at `path`, or with `archive` the archive's member of
    that name, which must be a regular file (never extracted to disk)."""
    if not archive:
        _check_size(name, os.path.getsize(path))
        with open(path, "rb") as f:
            return f.read()
    _check_archive(path, name)
    with tarfile.open(path, "r:gz") as tar:
        member = next((m for m in tar if posixpath.normpath(m.name) == GRAPH_FILE), None)
        if member is None:
            raise common.RunError(f"{name} holds no {GRAPH_FILE}; delete it and download {INCEPTION_URL} again.")
        if not member.isfile():
            kind = ("directory" if member.isdir() else "symlink" if member.issym() else "hard link"
                    if member.islnk() else "special file")
            raise common.RunError(f"{name} holds {GRAPH_FILE} as a {kind}, not a regular file; delete it and "
                                  f"download {INCEPTION_URL} again.")
        _check_size(name, member.size)
        return tar.extractfile(member).read()


def _check_size(name, size):
    if size > MAX_GRAPH_BYTES:
        raise common.RunError(f"{name} holds a graph of {size} bytes, larger than the FID Inception graph could "
                              f"be ({MAX_GRAPH_BYTES}); use the official {INCEPTION_URL}.")


def _read_graph_def(path, name=None, archive=None):
    """(checked GraphDef pruned to what FETCHED needs, id of the file's graph, whether it has the logits) from
    classify_image_graph_def.pb, an archive holding one (by default: a name ending in .tgz), or a folder holding
    either. `name` is what messages call it (default: its path)."""
    if os.path.isdir(path):
        names = (GRAPH_FILE, os.path.basename(INCEPTION_URL))
        path = next((os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))), path)
    if not os.path.isfile(path):
        raise common.RunError(f"--inception {path} is neither {GRAPH_FILE} nor inception-2015-12-05.tgz (nor a "
                              "folder holding one).")
    name = name or path
    try:
        raw = _graph_bytes(path, name, path.endswith((".tgz", ".tar.gz")) if archive is None else archive)
        graph_def = tf.compat.v1.GraphDef.FromString(raw)
    except (OSError, EOFError, zlib.error, tarfile.TarError, ValueError) as e:  # DecodeError is a ValueError
        raise common.RunError(f"{name} is not a readable Inception graph ({type(e).__name__}).") from None
    names = {node.name for node in graph_def.node}
    if not {FED, "pool_3"} <= names:
        raise common.RunError(f"{name} has no 'ExpandDims' input and 'pool_3' output; it is not the FID graph.")
    library = graph_def.library
    if library.function or library.gradient:
        function = library.function[0].signature.name if library.function else library.gradient[0].function_name
        raise common.RunError(f"{name} carries a function library ({function}), which the FID Inception graph "
                              f"does not; nothing in it has run, use the official {INCEPTION_URL}.")
    graph_def = _prune(graph_def, name)
    _check_graph(graph_def, name)
    return graph_def, hashlib.sha256(raw).hexdigest()[:16], FETCHED[1] in names


def _prune(graph_def, name):
    """The nodes that FETCHED depend on through inputs and control inputs, the fed node a leaf: a float
    Placeholder of its name, so that nothing upstream of the fed images is kept."""
    nodes = {node.name: node for node in graph_def.node}
    kept, todo = set(), [fetched for fetched in FETCHED if fetched in nodes]
    while todo:
        wanted = todo.pop()
        if wanted in kept:
            continue
        if wanted not in nodes:
            raise common.RunError(f"{name} has an input '{wanted}' that is no node in it; it is not a readable "
                                  f"Inception graph, use the official {INCEPTION_URL}.")
        kept.add(wanted)
        if wanted != FED:
            todo.extend(i.lstrip("^").split(":")[0] for i in nodes[wanted].input)
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    for node in graph_def.node:
        if node.name == FED:
            out.node.add(name=FED, op="Placeholder").attr["dtype"].type = tf.float32.as_datatype_enum
        elif node.name in kept:
            out.node.add().CopyFrom(node)
            out.node[-1].ClearField("device")  # placement is TensorFlow's here
    return out


def refused_op(op):
    """Why an op of type `op` may not run in the FID graph (a phrase), or None if it may."""
    op_def = op_def_registry.get(op)
    if op_def is None:
        return "an op this TensorFlow does not know"
    if any(word in op for word in DENIED):
        return "an op that reaches files, processes, the network, the console or Python"
    if op_def.is_stateful and op not in STATEFUL_ALLOWED:
        return "a stateful op"
    return None


def _check_graph(graph_def, name):
    """Refuse, naming the node and its op, a graph with any op that refused_op refuses or that calls a function."""
    for node in graph_def.node:
        why = refused_op(node.op)
        if why is None and any(v.HasField("func") or v.list.func for v in node.attr.values()):
            why = "an op that calls a function"
        if why:
            raise common.RunError(f"{name} is not the FID Inception graph: the features would run its node "
                                  f"'{node.name}' ({node.op}, {why}); nothing in it has run, use the official "
                                  f"{INCEPTION_URL}.")


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
        pool3, = tf.compat.v1.import_graph_def(graph_def, input_map={f"{FED}:0": images},
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

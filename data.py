"""Datasets -> infinite tf.data pipelines of [-1, 1] image batches, plus image I/O for sample grids.

Sources: Fashion-MNIST (default), MNIST, CIFAR-10, and any folder tree of JPEG/PNG files (extracted CelebA, LSUN).
Every source is decoded, resized and channel-converted once, to uint8 at the training size, so that no epoch after
the first decodes anything. The built-in datasets are read here (IDX files through find_idx/read_idx, CIFAR-10's
python release, else Keras' download), converted at load time and kept in memory; image folders are folders.py's
(the walk, damaged files, the decoded-image cache). CIFAR-10's pickled batches are read by an unpickler that admits
only what a NumPy array needs, so a file handed in as a batch cannot run code; read_cifar10_labels gives their
labels in the images' order. fit="pad" instead centres a built-in dataset's images, pixels unchanged, on a black
canvas of the training size (Fashion-MNIST 28 -> 32: a 2-pixel border of 0, -1 after scaling), as many DCGAN
implementations feed MNIST; folders, whose sizes vary, are always resized.

Data order. A resumed run should continue exactly as if it had never stopped, including which images it sees
next. A `Dataset.shuffle` buffer, or a checkpointed tf.data iterator, would have to be saved with every checkpoint
(large, and tied to the pipeline's exact structure). Instead the order is a pure function of (seed, batch number):

    epoch e  = argsort(stateless_uniform([n], seed=[seed, e])), a fresh permutation of all n images,
               cut into per_epoch = n // batch_size full batches (the n % batch_size left over sit out that epoch)
    batch b  = batch b % per_epoch of epoch b // per_epoch

`make_dataset(..., start_batch=k)` regenerates epoch k // per_epoch and skips k % per_epoch batches of *indices*
(nothing is decoded for them), so it yields exactly what an uninterrupted run would have yielded after k batches.
The only state a training script has to save is its own batch counter.

Replicas. `make_dataset(..., parts=R, take=...)` cuts every global batch into R consecutive slices of
batch_size // R images and yields only the slices in `take`, which is what `distribute_datasets_from_function`
feeds to replicas (replica r gets slice r). Slicing happens on indices, before any image is read, so the global
batches are the same for any number of replicas and input workers, and each worker reads only its own images.
"""
import gzip
import io
import os
import pickle
import tarfile
import zlib

import numpy as np
import tensorflow as tf
from PIL import Image

import files
import folders

DATASETS = ("fashion_mnist", "mnist", "cifar10", "folder")
FITS = ("resize", "pad")  # how source images reach the training size (see the module docstring)
# Where Debian's `dataset-fashion-mnist` package puts the IDX files; a module constant so tests can move it.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_IDX_STEMS = {("train", "images"): "train-images-idx3-ubyte", ("test", "images"): "t10k-images-idx3-ubyte",
              ("train", "labels"): "train-labels-idx1-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}
_CHUNK = 4096  # images per resize call at load time: bounds the float32 working copy (64 MB at 64x64x1)
_PRETTY = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}
_OFFLINE_HINT = {
    "fashion_mnist": "run `apt-get install dataset-fashion-mnist` or pass --data_dir with the original IDX files",
    "mnist": "pass --data_dir with the original IDX files",
    "cifar10": "pass --data_dir with the extracted cifar-10-batches-py folder or cifar-10-python.tar.gz",
}


class DataError(Exception):
    """Bad or missing data; str(e) is one sentence a user can act on (what is wrong, what to do)."""


# ---------------------------------------------------------------------------------------------- public API

def load_images(name, data_dir=None, image_size=32, channels=1, split="train", limit=None, fit="resize"):
    """Whole dataset (or its first `limit` images) as uint8 (N, image_size, image_size, channels).

    For "folder", `split` is ignored, the files are taken in sorted path order, and damaged files are left out
    (with a warning each; more than 1% of them is a DataError), so N can be smaller than the number of files.
    fit="pad" (built-in datasets only) centres the original pixels on a black image_size canvas instead of
    resizing; an odd difference puts the smaller half at the top and left.
    """
    _check_args(name, image_size, channels, split, fit)
    if name == "folder":
        return folders.load_images(data_dir, image_size, channels, limit)
    raw = (_load_cifar10(data_dir, split) if name == "cifar10" else _load_idx_dataset(name, data_dir, split))[:limit]
    if fit == "pad":
        raw = _pad(raw, image_size, name)  # then _convert_all converts the channels only
    return _convert_all(raw, image_size, channels)


def make_dataset(name, data_dir=None, image_size=32, channels=1, batch_size=64, seed=0, start_batch=0,
                 parts=1, take=None, dequantize=False, fit="resize"):
    """Infinite dataset of float32 [batch_size // parts, image_size, image_size, channels] slices in [-1, 1].

    Pixel value v (0..255) becomes v / 127.5 - 1; with dequantize, (v + u) / 128 - 1 with u ~ U(0, 1), spread over
    its quantisation bin as in the WGAN-GP authors' CIFAR-10 code (`2 * (x / 256 - .5) + U(0, 1/128)`); u is a
    pure function of (seed, batch, pixel), drawn per global batch so that replicas and resumes see the same values.

    Batch b is a pure function of (seed, b); start_batch=k resumes at (global) batch k (see the module docstring).
    Each batch is cut into `parts` consecutive slices, and the slices whose index is in `take` (default: all) are
    yielded in index order, batch after batch: parts=1 yields whole batches, parts=R with take=[r] the slices
    replica r of R trains on. Every shape is static, so a tf.function traced on one element never retraces.
    `fit` is load_images'.
    """
    _check_args(name, image_size, channels, fit=fit)
    slices = _check_slices(batch_size, start_batch, parts, take)
    slice_size = batch_size // parts
    if name == "folder":
        source, in_memory = folders.source(data_dir, image_size, channels)  # in memory, or the cache's files
    else:
        source, in_memory = _builtin_source(name, data_dir, image_size, channels, fit), True
    source = _host_tensor(source)
    n = int(source.shape[0])
    if n < batch_size:
        raise DataError(f"The {name} data has only {n} images, fewer than batch_size={batch_size}; "
                        "lower --batch_size or add images.")
    indices = _index_slices(n, batch_size, seed, start_batch, parts, slices)
    # Steady state: a gather from memory, or a read of raw bytes per image; nothing is decoded, and no Python runs
    # (a tf.py_function here would hold the GIL and, under op determinism, serialise the whole pipeline). The
    # scaling happens in the same map as the read: a second map stage would cost a hand-over between threads per batch.
    def scaled(x):  # v -> v / 127.5 - 1; with dequantize, the uint8 values go on to _dequantized
        return x if dequantize else tf.cast(x, tf.float32) / 127.5 - 1.0

    if in_memory:
        images = indices.map(lambda idx: scaled(tf.gather(source, idx)),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        images = (indices.unbatch()
                  .map(lambda i: scaled(folders.read_cached(source[i], image_size, channels)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                  .batch(slice_size, drop_remainder=True))
    if dequantize:
        images = _dequantized(images, seed, start_batch, slices, [batch_size, image_size, image_size, channels],
                              slice_size)
    return images.prefetch(tf.data.AUTOTUNE)


def _check_slices(batch_size, start_batch, parts, take):
    """make_dataset's batch arguments checked -> the slice indices to yield, sorted."""
    if batch_size < 1 or start_batch < 0:
        raise DataError(f"batch_size must be >= 1 and start_batch >= 0, got {batch_size} and {start_batch}.")
    if not isinstance(parts, (int, np.integer)) or parts < 1 or batch_size % parts:
        raise DataError(f"batch_size={batch_size} does not split into parts={parts} equal slices; "
                        "use a batch size divisible by the number of replicas.")
    slices = list(range(parts)) if take is None else sorted(set(take))
    if not slices or not all(isinstance(r, (int, np.integer)) and 0 <= r < parts for r in slices):
        raise DataError(f"take must hold slice indices in range({parts}), got {take!r}.")
    return slices


def _index_slices(n, batch_size, seed, start_batch, parts, slices):
    """The data order (see the module docstring): int32 [batch_size // parts] index slices of n images, batch
    after batch from global batch start_batch, each batch's slices in `slices` in index order."""
    per_epoch, slice_size = n // batch_size, batch_size // parts

    def epoch_slices(epoch):
        # float32 draws tie now and then (~200 pairs at n=60k); a stable sort keeps the permutation deterministic.
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        order = tf.argsort(keys, stable=True)
        batches = tf.reshape(order[:per_epoch * batch_size], [per_epoch, parts, slice_size])
        # [per_epoch, len(slices), slice_size] -> one index slice per element, batch-major
        return tf.data.Dataset.from_tensor_slices(tf.reshape(tf.gather(batches, slices, axis=1), [-1, slice_size]))

    return (tf.data.Dataset.counter(start_batch // per_epoch)
            .flat_map(epoch_slices)
            .skip(start_batch % per_epoch * len(slices)))


def _dequantized(images, seed, start_batch, slices, shape, slice_size):
    """uint8 slices -> (v + u) / 128 - 1, u ~ U(0, 1) a pure function of (seed, global batch, pixel)."""
    # Element k (after the skip) is slice slices[k % L] of global batch start_batch + k // L.
    where = tf.data.Dataset.counter().map(
        lambda k: (start_batch + k // len(slices), tf.gather(tf.constant(slices, tf.int64), k % len(slices))))

    def dequantize(x, where):
        batch, part = where
        # The whole global batch's noise, then this slice of it: the same values for any number of replicas.
        # The key's second half is negative, so it never meets an epoch's permutation key [seed, e >= 0].
        u = tf.random.stateless_uniform(shape, seed=tf.stack([tf.constant(seed, tf.int64), -1 - batch]))
        return (tf.cast(x, tf.float32) + u[part * slice_size:(part + 1) * slice_size]) / 128.0 - 1.0

    return tf.data.Dataset.zip((images, where)).map(dequantize, num_parallel_calls=tf.data.AUTOTUNE,
                                                    deterministic=True)


def to_uint8(images):
    """Float images in [-1, 1] (tf or numpy) -> uint8 in [0, 255]; values outside the range are clipped."""
    x = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images_uint8, rows, cols, pad=2):
    """(N, H, W, C) uint8 -> one (rows*H + (rows-1)*pad, cols*W + (cols-1)*pad, C) uint8 image, row-major.

    Tiles are separated by `pad` pixels of 0 (no outer border). Missing tiles (N < rows*cols) stay 0;
    extra images (N > rows*cols) are dropped.
    """
    images = np.asarray(images_uint8)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"image_grid wants uint8 (N, H, W, C) images, got {images.dtype} {images.shape}")
    _, h, w, c = images.shape
    grid = np.zeros((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), np.uint8)
    for i, image in enumerate(images[:rows * cols]):
        top, left = (i // cols) * (h + pad), (i % cols) * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid


def save_image(array_uint8, path):
    """Write (H, W) / (H, W, 1) uint8 as a grayscale PNG or (H, W, 3) as RGB, creating parent directories.

    Written through files.atomic_write: a crash leaves either the old file or the complete new one.
    """
    array = np.asarray(array_uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(f"save_image wants uint8 (H, W), (H, W, 1) or (H, W, 3), got {array.dtype} {array.shape}")
    with files.atomic_write(path) as f:
        Image.fromarray(array).save(f, format="PNG")


# ---------------------------------------------------------------------------------------------- helpers

def _check_args(name, image_size, channels, split="train", fit="resize"):
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if fit not in FITS:
        raise DataError(f"fit must be one of {', '.join(FITS)}, got {fit!r}.")
    if fit == "pad" and name == "folder":
        # A folder's images come in many sizes, and its cache (keyed without fit) holds resized images only.
        raise DataError("--fit pad is for the built-in datasets, whose images share one size; a folder's images "
                        "vary in size, so use --fit resize.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}.")


def _require_dir(path, what):
    if path is None:
        raise DataError(f"No data directory given; pass --data_dir pointing at {what}.")
    if not os.path.isdir(path):
        raise DataError(f"Data directory {path} does not exist or is not a directory; "
                        f"pass --data_dir pointing at {what}.")


def _convert_all(images, image_size, channels):
    """uint8 (N, h, w, c) -> uint8 (N, image_size, image_size, channels), in chunks to bound float memory."""
    if images.shape[1:] == (image_size, image_size, channels):
        return images
    out = np.empty((len(images), image_size, image_size, channels), np.uint8)
    for start in range(0, len(images), _CHUNK):
        out[start:start + _CHUNK] = _resize_uint8(images[start:start + _CHUNK], image_size, channels).numpy()
    return out


def _pad(images, image_size, name):
    """uint8 (N, h, w, c) -> (N, image_size, image_size, c): the originals, untouched, centred on black (0)."""
    h, w = images.shape[1:3]
    if h > image_size or w > image_size:
        raise DataError(f"--fit pad needs images no larger than --image_size: {name} is {h}x{w}, --image_size is "
                        f"{image_size}; use --fit resize.")
    top, left = (image_size - h) // 2, (image_size - w) // 2  # an odd difference: the smaller half first
    return np.pad(images, ((0, 0), (top, image_size - h - top), (left, image_size - w - left), (0, 0)))


def _resize_uint8(images, image_size, channels):
    """uint8 (N, h, w, c) -> bilinear resize -> RGB<->gray -> rounded uint8. Shared by every source, so folder
    images decoded inside tf.data match what load_images returns for them bit for bit. (Folder images arrive as
    float32 with the right channels already: see folders._decode_file.)"""
    x = tf.cast(images, tf.float32)
    if x.shape[1] != image_size or x.shape[2] != image_size:
        # Antialiasing only changes anything when shrinking; for upscaling (28 -> 32) the plain kernel gives the
        # same pixels (+-1 from rounding) about 8x faster. Folder images have unknown shape here: always on.
        shrinking = None in x.shape[1:3] or max(x.shape[1:3]) > image_size
        x = tf.image.resize(x, [image_size, image_size], method="bilinear", antialias=shrinking)
    if channels == 1 and x.shape[-1] == 3:
        x = tf.image.rgb_to_grayscale(x)  # luminance 0.2989 R + 0.5870 G + 0.1140 B
    elif channels == 3 and x.shape[-1] == 1:
        x = tf.image.grayscale_to_rgb(x)
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)


_memo = {}  # the one dataset kept in memory, by its key (a folder's cache, or a source's arguments and files)


def keep(key, load):
    """The dataset `key` names, as a tensor on the host: the one kept from an earlier call with this key, else
    load()'s images, kept in place of the dataset kept before (one at a time: a run trains on one dataset)."""
    if key not in _memo:
        _memo.clear()  # first: the old entry's memory is free before the new one is loaded
        _memo[key] = _host_tensor(load())
    return _memo[key]


def _host_tensor(array):
    """A tensor on the host holding array (a tensor already there is used as it is: no second copy). Pinned to the
    host: tf.data runs there, and a GPU copy of the whole dataset would only waste memory."""
    with tf.device("/cpu:0"):
        return tf.constant(array)


def _builtin_source(name, data_dir, image_size, channels, fit):
    """load_images(name, ...), kept for the next call with the same arguments and unchanged files: a benchmark
    builds the data once per row, and resizing Fashion-MNIST to 64x64 takes seconds each time."""
    if name == "fashion_mnist" and data_dir is None:
        places = idx_dirs(name)
    elif data_dir is None:
        places = [os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")),
                               "datasets")]
    else:
        places = [data_dir, os.path.join(data_dir, "cifar-10-batches-py")]
    found = []
    for place in places:  # the sources' names, sizes and modification times: changed files are loaded again
        if os.path.isdir(place):
            found += [(e.path, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(place) if e.is_file()]
        elif os.path.isfile(place):
            found.append((place, os.path.getsize(place), os.stat(place).st_mtime_ns))
    key = (name, image_size, channels, fit, tuple(sorted(found)))  # fit: padded and resized images differ
    return keep(key, lambda: load_images(name, data_dir, image_size, channels, fit=fit))


# ---------------------------------------------------------------------------------------------- built-in sources

def _load_idx_dataset(name, data_dir, split):
    """(Fashion-)MNIST as uint8 (N, 28, 28, 1): data_dir, else local copies, else a Keras download."""
    if data_dir is not None:
        _require_dir(data_dir, f"the original {_PRETTY[name]} IDX files")
    path = find_idx(name, data_dir, split)
    if path is not None:
        return read_idx(path, ndim=3)[..., None]
    if data_dir is not None:
        raise DataError(f"No {_IDX_STEMS[split, 'images']}(.gz) found in {data_dir}; "
                        f"pass --data_dir holding the original {_PRETTY[name]} IDX files.")
    return _keras_load(name, split)


def idx_dirs(name, data_dir=None):
    """Where (Fashion-)MNIST's IDX files are looked for, in order: data_dir if given; else, for Fashion-MNIST,
    Debian's dataset-fashion-mnist and Keras' download cache (MNIST has no local copy Keras' loader would read)."""
    if data_dir is not None:
        return [data_dir]
    if name != "fashion_mnist":
        return []
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return [DEBIAN_FASHION_MNIST, os.path.join(keras_home, "datasets", "fashion-mnist")]


def find_idx(name, data_dir, split, kind="images"):
    """The path of the split's IDX image or label file (plain or .gz) in the first of idx_dirs holding it, or None."""
    stem = _IDX_STEMS[split, kind]
    for directory in idx_dirs(name, data_dir):
        for path in (os.path.join(directory, stem), os.path.join(directory, stem + ".gz")):
            if os.path.isfile(path):
                return path
    return None


def read_idx(path, ndim):
    """An IDX file of unsigned bytes (the original MNIST / Fashion-MNIST releases), gzipped or not, with `ndim`
    dimensions (3 for images (N, rows, cols), 1 for labels (N,)) -> uint8 array of that shape."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # missing, unreadable, truncated or corrupt gzip
        raise DataError(f"Could not read {path} ({type(e).__name__}); "
                        "re-download it or pass another --data_dir.") from e
    header = 4 + 4 * ndim
    magic, *shape = (int(v) for v in np.frombuffer(raw[:header].ljust(header, b"\0"), ">u4"))
    if magic != 0x0800 + ndim or len(raw) != header + int(np.prod(shape)):  # 0x08: unsigned bytes
        raise DataError(f"{path} is truncated or not an IDX file of {ndim}-d unsigned bytes; "
                        "re-download it or pass another --data_dir.")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()


def read_cifar10_labels(data_dir=None, split="train"):
    """CIFAR-10's class labels (0..9) as uint8 (N,), in the order of load_images("cifar10", data_dir, split=split)'s
    images: from the same batches, read the same way (data_dir None: Keras' download)."""
    _check_args("cifar10", 32, 3, split)
    if data_dir is None:
        return _keras_load("cifar10", split, labels=True)
    labels = []
    for where, batch in _cifar10_batches(data_dir, split):
        try:
            labels.append(np.asarray(batch[b"labels"], np.uint8).reshape(-1))
        except Exception as e:  # no labels, or not a list of small numbers
            raise DataError(f"{where} holds no CIFAR-10 labels ({type(e).__name__}); "
                            "re-download cifar-10-python.tar.gz.") from e
    return np.concatenate(labels)


def _load_cifar10(data_dir, split):
    """CIFAR-10 as uint8 (N, 32, 32, 3) from the python-pickle release (folder, its parent, or the .tar.gz)."""
    if data_dir is None:
        return _keras_load("cifar10", split)
    images = []
    for where, batch in _cifar10_batches(data_dir, split):
        try:  # b"data": (N, 3072) uint8 stored channel-major
            images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        except Exception as e:  # no images, or not an array of bytes
            raise DataError(f"{where} is not a readable CIFAR-10 batch ({type(e).__name__}); "
                            "re-download cifar-10-python.tar.gz.") from e
    return np.concatenate(images)


def _cifar10_batches(data_dir, split):
    """The split's batches of the python release (a folder, its parent, or the .tar.gz) in order -> [(where, the
    batch's dict)]. Archive members are read in memory, never extracted, and must be regular files."""
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    folder = next((d for d in (data_dir, os.path.join(data_dir, "cifar-10-batches-py"))
                   if os.path.isfile(os.path.join(d, names[0]))), None)
    archive = data_dir if data_dir.endswith(".tar.gz") else os.path.join(data_dir, "cifar-10-python.tar.gz")
    if folder is None and not os.path.isfile(archive):
        _require_dir(data_dir, "the CIFAR-10 python release")
        raise DataError(f"No cifar-10-batches-py folder or cifar-10-python.tar.gz found in {data_dir}; "
                        "pass --data_dir holding one of them.")
    where = folder or archive
    try:
        if folder is not None:
            found = {}
            for name in names:
                where = os.path.join(folder, name)
                with open(where, "rb") as f:
                    found[name] = f.read()
            places = {name: os.path.join(folder, name) for name in names}
        else:
            found = _archive_members(archive, [f"cifar-10-batches-py/{name}" for name in names])
            places = {name: f"{archive}:cifar-10-batches-py/{name}" for name in names}
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise DataError(f"Could not read CIFAR-10 from {where} ({type(e).__name__}); "
                        "re-download cifar-10-python.tar.gz.") from e
    return [(places[name], _unpickle_batch(found[name], places[name])) for name in names]


def _archive_members(archive, wanted):
    """{basename: bytes} of the archive's regular files named `wanted` (./ allowed), in one pass in archive order
    (the release stores its batches out of order, and seeking back in gzip decompresses again from the start)."""
    found = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = os.path.normpath(member.name)
            if name not in wanted:
                continue
            if not member.isfile() or name in found:
                raise DataError(f"{archive}:{name} is {'a second copy' if name in found else 'not a regular file'}"
                                " in the archive; re-download cifar-10-python.tar.gz.")
            found[name] = tar.extractfile(member).read()
    missing = [name for name in wanted if name not in found]
    if missing:
        raise DataError(f"{archive} holds no {missing[0]}; re-download cifar-10-python.tar.gz.")
    return {os.path.basename(name): raw for name, raw in found.items()}


class _Refused(pickle.UnpicklingError):
    """A pickle names a global that no CIFAR-10 batch names."""


class _BatchUnpickler(pickle.Unpickler):
    """Reads what a pickled CIFAR-10 batch holds and nothing else: plain containers, strings, bytes, numbers, and
    NumPy arrays through the only globals an array needs. Any other global (os.system, eval, ...) is refused
    before it is looked up, so a file handed in as a batch cannot run code."""

    _reconstruct = np.zeros(0).__reduce__()[0]
    GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # the release: Python 2 and NumPy 1
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # NumPy 2
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module, name):
        if (module, name) not in self.GLOBALS:
            raise _Refused(f"{module}.{name}")
        return self.GLOBALS[module, name]


def _unpickle_batch(raw, where):
    """One pickled batch -> its dict (bytes keys, as Python 2 wrote them), read with _BatchUnpickler."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"{where} is not a CIFAR-10 batch: it names {e}, which no batch of the python release "
                        "does, so it is not read; pass --data_dir holding the CIFAR-10 python release.") from None
    except Exception as e:  # a damaged pickle can raise nearly anything (EOFError, UnpicklingError, ValueError, ...)
        raise DataError(f"{where} is not a readable CIFAR-10 batch ({type(e).__name__}); "
                        "re-download cifar-10-python.tar.gz.") from e
    if not isinstance(batch, dict):
        raise DataError(f"{where} is not a readable CIFAR-10 batch (it holds a {type(batch).__name__}, not a dict); "
                        "re-download cifar-10-python.tar.gz.")
    return batch


def _keras_load(name, split, labels=False):
    """Keras' downloader (which reuses its cache in ~/.keras/datasets) as the last resort: the split's images, or
    with labels its labels as uint8 (N,)."""
    import keras  # deferred: only needed when no local copy exists

    try:
        train, test = getattr(keras.datasets, name).load_data()
    except Exception as e:  # Keras re-raises URLError/HTTPError as a bare Exception
        raise DataError(f"Could not download {_PRETTY[name]} (no internet?); {_OFFLINE_HINT[name]}.") from e
    images, classes = train if split == "train" else test
    if labels:
        return np.asarray(classes, np.uint8).reshape(-1)
    return images if images.ndim == 4 else images[..., None]

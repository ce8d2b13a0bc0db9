"""Datasets -> infinite tf.data pipelines of [-1, 1] image batches, plus image I/O for sample grids.

Sources: Fashion-MNIST (default), MNIST, CIFAR-10, and any folder tree of JPEG/PNG files (extracted CelebA, LSUN).
Every source is decoded, resized and channel-converted once, to uint8 at the training size, so that no epoch after
the first decodes anything. The small datasets are converted at load time and kept in memory. PNGs keep their
alpha (composited on black) and 16-bit depth (scaled exactly). fit="pad" instead centres a built-in dataset's
images, pixels unchanged, on a black canvas of the training size (Fashion-MNIST 28 -> 32: a 2-pixel border of 0,
-1 after scaling), as many DCGAN implementations feed MNIST; folders, whose sizes vary, are always resized.

Folder cache. A folder's images are decoded once into a cache, a directory of raw uint8 files (image_size^2 *
channels bytes per image, PACK images to a file, or one per file when they are read from disk), under
$GAN_CACHE/folders if that is set, else in `.gan-cache` inside the folder (or ~/.cache/tf-gans/folders if the
folder is read-only). Its name holds a digest of the folder's listing (every
file's path, size and modification time), the image size and channels, and the decoder's version, so later runs
reuse it and a changed folder gets a new one (the old one is deleted). It is built under a temporary name and
renamed into place when complete, so two runs building it at once each build their own and the first rename wins.
The images then sit in memory if they fit MEMORY_BUDGET_GB (8 GB; $GAN_DATA_MEMORY_GB overrides), else the
pipeline reads the file of each image it draws. Either way the steady-state pipeline is TensorFlow ops only.

Damaged files. Every file gets a cheap check before the cache is built (headers, PNG chunk CRCs, the JPEG end
marker), and each file is then decoded by the pipeline's own decoder. In a folder of fewer than
FULL_DECODE_MAX_FILES files, the files that fail either are left out before the data order is drawn, with one
warning each on stderr; if more than 1% of the files fail, the folder is refused in one sentence. A larger folder
is refused on the cheap check and a decoded, evenly spaced sample of DECODE_SAMPLE files (before the long decode),
and a file failing only the full decode is replaced by the next file in sorted path order that decodes, again with
a warning. (A stand-in, not a gap: tf.data's ignore_errors would drop the image and shift every later one by a
place.) A run that finds the cache warns about the same files again.

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
import bisect
import gzip
import hashlib
import json
import os
import pickle
import shutil
import sys
import tarfile
import threading
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from PIL import Image

import files

DATASETS = ("fashion_mnist", "mnist", "cifar10", "folder")
FITS = ("resize", "pad")  # how source images reach the training size (see the module docstring)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Where Debian's `dataset-fashion-mnist` package puts the IDX files; a module constant so tests can move it.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_IDX_STEMS = {("train", "images"): "train-images-idx3-ubyte", ("test", "images"): "t10k-images-idx3-ubyte",
              ("train", "labels"): "train-labels-idx1-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}
# Folders with fewer files lose the files that fail to decode; larger ones are checked on a sample before the long
# decode (about 1 ms per CelebA-sized JPEG per core) and get stand-ins (see the module docstring). A module
# constant so tests can lower it.
FULL_DECODE_MAX_FILES = 20_000
DECODE_SAMPLE = 1000  # larger folders have this many files, evenly spaced, decoded up front
MAX_DAMAGED = 0.01  # the fraction of a folder's files that may be damaged and skipped before it is refused
# A folder's decoded images are held in memory up to this size ($GAN_DATA_MEMORY_GB overrides it), else read from
# the cache's files (one per image) batch by batch. CelebA at 64x64 RGB is 2.5 GB, at 128x128 10 GB.
MEMORY_BUDGET_GB = 8
CACHE_DIR_NAME = ".gan-cache"  # a folder's decoded-image cache, next to the data unless $GAN_CACHE is set
CACHE_VERSION = 1  # part of every cache's name: raise it when a change to the decoder changes any pixel
PACK = 10_000  # images per cache file when the images are held in memory (one file per image otherwise)
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
        paths, problems = _scan_folder(data_dir, limit)
        images, failed = _decode_all([p for p in paths if p not in problems], image_size, channels)
        _drop_damaged(data_dir, paths, {**problems, **failed})
        return images
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
    if batch_size < 1 or start_batch < 0:
        raise DataError(f"batch_size must be >= 1 and start_batch >= 0, got {batch_size} and {start_batch}.")
    if not isinstance(parts, (int, np.integer)) or parts < 1 or batch_size % parts:
        raise DataError(f"batch_size={batch_size} does not split into parts={parts} equal slices; "
                        "use a batch size divisible by the number of replicas.")
    slices = list(range(parts)) if take is None else sorted(set(take))
    if not slices or not all(isinstance(r, (int, np.integer)) and 0 <= r < parts for r in slices):
        raise DataError(f"take must hold slice indices in range({parts}), got {take!r}.")
    slice_size = batch_size // parts
    if name == "folder":
        source, in_memory = _folder_source(data_dir, image_size, channels)  # in memory, or the cache's files
    else:
        source, in_memory = _builtin_source(name, data_dir, image_size, channels, fit), True
    source = _host_tensor(source)
    n = int(source.shape[0])
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise DataError(f"The {name} data has only {n} images, fewer than batch_size={batch_size}; "
                        "lower --batch_size or add images.")

    def epoch_slices(epoch):
        # float32 draws tie now and then (~200 pairs at n=60k); a stable sort keeps the permutation deterministic.
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        order = tf.argsort(keys, stable=True)
        batches = tf.reshape(order[:per_epoch * batch_size], [per_epoch, parts, slice_size])
        # [per_epoch, len(slices), slice_size] -> one index slice per element, batch-major
        return tf.data.Dataset.from_tensor_slices(tf.reshape(tf.gather(batches, slices, axis=1), [-1, slice_size]))

    indices = (tf.data.Dataset.counter(start_batch // per_epoch)
               .flat_map(epoch_slices)
               .skip(start_batch % per_epoch * len(slices)))
    # Steady state: a gather from memory, or a read of raw bytes per image; nothing is decoded, and no Python runs
    # (a tf.py_function here would hold the GIL and, under op determinism, serialise the whole pipeline).
    if in_memory:
        images = indices.map(lambda idx: tf.gather(source, idx),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        images = (indices.unbatch()
                  .map(lambda i: _read_cached(source[i], image_size, channels),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                  .batch(slice_size, drop_remainder=True))

    if dequantize:
        # Element k (after the skip) is slice slices[k % L] of global batch start_batch + k // L.
        where = tf.data.Dataset.counter().map(
            lambda k: (start_batch + k // len(slices), tf.gather(tf.constant(slices, tf.int64), k % len(slices))))
        shape = [batch_size, image_size, image_size, channels]

        def dequantized(x, where):
            batch, part = where
            # The whole global batch's noise, then this slice of it: the same values for any number of replicas.
            # The key's second half is negative, so it never meets an epoch's permutation key [seed, e >= 0].
            u = tf.random.stateless_uniform(shape, seed=tf.stack([tf.constant(seed, tf.int64), -1 - batch]))
            return (tf.cast(x, tf.float32) + u[part * slice_size:(part + 1) * slice_size]) / 128.0 - 1.0

        images, to_float = tf.data.Dataset.zip((images, where)), dequantized
    else:
        def to_float(x):
            return tf.cast(x, tf.float32) / 127.5 - 1.0
    return (images.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


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
    float32 with the right channels already: see _decode_file.)"""
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


def _decode_file(path, image_size, channels):
    """Image file -> centred square crop -> uint8 (image_size, image_size, channels)."""
    raw = tf.io.read_file(path)
    image = tf.cond(tf.io.is_jpeg(raw),  # by content, not by file name
                    lambda: tf.cast(tf.io.decode_jpeg(raw, channels=3), tf.float32),  # grayscale and CMYK too
                    lambda: _read_png(raw))
    image = _to_channels(image, channels)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = _resize_uint8(image[None, top:top + side, left:left + side], image_size, channels)[0]
    image.set_shape([image_size, image_size, channels])
    return image


def _read_png(raw):
    """PNG bytes -> float32 (h, w, 1) gray or (h, w, 3) RGB in [0, 255], alpha composited on black.

    decode_png at uint16 with the file's own channels is the one call that keeps both the alpha channel (RGBA, LA,
    palette + tRNS) and all 16 bits; at uint8 it drops alpha and truncates 16-bit values (511 -> 1, not 2).
    """
    x = tf.cast(tf.io.decode_png(raw, channels=0, dtype=tf.uint16), tf.float32) / 257.0  # 8-bit v*257 -> v exactly
    c = tf.shape(x)[2]  # 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA (palettes expand to 3 or 4)
    has_alpha = c % 2 == 0
    alpha = tf.where(has_alpha, x[..., -1:] / 255.0, 1.0)
    return x[..., :c - tf.cast(has_alpha, tf.int32)] * alpha  # a pixel with alpha 0 becomes black


def _to_channels(image, channels):
    """float32 (h, w, 1 or 3) -> (h, w, channels). Gray stays gray for channels=1: a detour through RGB would
    scale it by 0.2989 + 0.5870 + 0.1140 = 0.9999 and round 16-bit and composited values the wrong way now and then."""
    c = tf.shape(image)[2]
    if channels == 3:
        image = tf.tile(image, [1, 1, 3 // c])
    else:
        image = tf.cond(tf.equal(c, 3), lambda: tf.image.rgb_to_grayscale(tf.ensure_shape(image, [None, None, 3])),
                        lambda: image)
    return tf.ensure_shape(image, [None, None, channels])


_memo = {}  # the last dataset make_dataset held in memory, by its cache (or source): one entry, reused in-process


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
    files = []
    for place in places:  # the sources' names, sizes and modification times: changed files are loaded again
        if os.path.isdir(place):
            files += [(e.path, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(place) if e.is_file()]
        elif os.path.isfile(place):
            files.append((place, os.path.getsize(place), os.stat(place).st_mtime_ns))
    key = (name, image_size, channels, fit, tuple(sorted(files)))  # fit: padded and resized images differ
    if key not in _memo:
        _memo.clear()  # first: the old entry's memory is free before the new one is loaded
        _memo[key] = _host_tensor(load_images(name, data_dir, image_size, channels, fit=fit))
    return _memo[key]


# ---------------------------------------------------------------------------------------------- folder cache

def _folder_source(data_dir, image_size, channels):
    """A folder's usable images at the training size, each decoded once -> (uint8 (N, size, size, channels) held in
    memory, True) if they fit the memory budget, else (the N cache files holding them, one image each, False)."""
    paths = _list_images(data_dir)
    large = len(paths) >= FULL_DECODE_MAX_FILES
    in_memory = len(paths) * image_size * image_size * channels <= _memory_budget()
    # In memory: images packed PACK to a file (fast to load); else one file per image (the pipeline reads any one).
    pack = PACK if in_memory else 1
    base, prefix = _cache_name(data_dir, paths, image_size, channels, large)
    roots = _cache_roots(data_dir)
    for root in roots:
        for per_file in ((PACK, 1) if in_memory else (1,)):  # either layout holds what memory needs
            found = _read_cache(os.path.join(root, f"{base}-{per_file}"), image_size, channels, in_memory)
            if found is not None:
                return found, in_memory
    name = f"{base}-{pack}"
    tmp = next((t for t in (_temp_dir(root, name) for root in roots) if t is not None), None)
    size = f"{len(paths) * image_size * image_size * channels / 2 ** 30:.2g} GB"
    if tmp is None and not in_memory:
        raise DataError(f"Cannot write the decoded-image cache of {data_dir} ({size}) under {' or '.join(roots)}; "
                        "set $GAN_CACHE to a writable folder with that much free space.")
    print(f"note: decoding the {len(paths)} image files under {data_dir} once, at {image_size}x{image_size}x"
          f"{channels}" + (f", into {os.path.dirname(tmp)} (later runs reuse it)" if tmp else
                           " (no writable cache folder: later runs decode again)"), file=sys.stderr, flush=True)
    try:
        writer = None if tmp is None else _CacheWriter(tmp, pack, image_size * image_size * channels)
        images, count, warnings = _decode_folder(data_dir, paths, image_size, channels, large, writer, in_memory)
        if tmp is None:
            return images, True
        writer.close()
        with open(os.path.join(tmp, "meta.json"), "w") as f:  # written last: a cache with meta.json is complete
            json.dump(dict(version=CACHE_VERSION, tensorflow=tf.__version__, data_dir=os.path.abspath(data_dir),
                           shape=[count, image_size, image_size, channels], per_file=pack, warnings=warnings), f)
        final = os.path.join(os.path.dirname(tmp), name)
        try:
            os.rename(tmp, final)  # atomic: other runs see no cache or a complete one
        except OSError:
            if not os.path.isfile(os.path.join(final, "meta.json")):
                raise
            # Another run published the same cache first: the same listing decoded by the same code, so the same
            # images; use it, and ours goes in the finally clause.
        for stale in os.listdir(os.path.dirname(final)):  # this folder's caches from before it changed
            if stale.startswith(prefix) and not stale.startswith(base):  # (its other layout stays)
                shutil.rmtree(os.path.join(os.path.dirname(final), stale), ignore_errors=True)
    except OSError as e:
        raise DataError(f"Cannot write the decoded-image cache of {data_dir} under {os.path.dirname(tmp)} "
                        f"({e.strerror or e}); free {size} there or set $GAN_CACHE to another folder.") from e
    finally:
        if tmp is not None and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    _memo.clear()
    if in_memory:
        _memo[final] = _host_tensor(images)
        return _memo[final], True
    return np.array(_cache_files(final, count, 1)), False


def _memory_budget():
    """Bytes of decoded folder images a run may hold in memory: MEMORY_BUDGET_GB, or $GAN_DATA_MEMORY_GB."""
    value = os.environ.get("GAN_DATA_MEMORY_GB") or MEMORY_BUDGET_GB
    try:
        return float(value) * 2 ** 30
    except ValueError:
        raise DataError(f"$GAN_DATA_MEMORY_GB must be a number of gigabytes, got {value!r}.") from None


def _cache_roots(data_dir):
    """Where a folder's cache may live, in order of preference: $GAN_CACHE if set, else next to the data (a
    read-only dataset: the user's cache folder)."""
    if os.environ.get("GAN_CACHE"):
        return [os.path.join(os.environ["GAN_CACHE"], "folders")]
    return [os.path.join(data_dir, CACHE_DIR_NAME), os.path.join(os.path.expanduser("~"), ".cache", "tf-gans",
                                                                 "folders")]


def _cache_name(data_dir, paths, image_size, channels, large):
    """(the cache's directory name but its layout, the prefix shared by every cache of this folder at this size).

    The name holds a digest of everything the cached pixels depend on: the listing (each file's path, size and
    modification time, so a changed folder gets a new cache), the decoder (CACHE_VERSION, TensorFlow's version)
    and the damaged-file rule in force (see the module docstring).
    """
    listing = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        # path[len(data_dir):]: the path below the folder (os.walk's paths all start with data_dir)
        listing.update(f"{path[len(data_dir):]}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    listing.update(f"{CACHE_VERSION} {tf.__version__} {large}".encode())
    folder = os.path.realpath(data_dir)
    prefix = (f"{os.path.basename(folder) or 'root'}-{hashlib.sha256(folder.encode()).hexdigest()[:8]}-"
              f"{image_size}x{image_size}x{channels}-")
    return prefix + listing.hexdigest()[:16], prefix


def _cache_files(cache, count, per_file):
    """The files of a cache of `count` images, `per_file` to a file."""
    return [_cache_file(cache, i) for i in range((count + per_file - 1) // per_file)]


def _cache_file(cache, i):
    """A cache's i-th file, 10,000 to a subfolder."""
    return os.path.join(cache, f"{i // 10000:05d}", f"{i:08d}.u8")


def _read_cached(path, image_size, channels):
    """uint8 [image_size, image_size, channels] from a one-image cache file (raw bytes: nothing to decode)."""
    return tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.uint8), [image_size, image_size, channels])


def _read_cache(cache, image_size, channels, in_memory):
    """The images (in_memory) or the one-image files of a complete cache, its damaged files warned about again;
    None if there is none (or it cannot be read: then it is built again)."""
    try:
        with open(os.path.join(cache, "meta.json")) as f:
            meta = json.load(f)
        shape, per_file = meta["shape"], meta["per_file"]
        files = _cache_files(cache, shape[0], per_file)
        record = image_size * image_size * channels
        if (shape[1:] != [image_size, image_size, channels] or not files
                or sum(os.path.getsize(f) for f in files) != shape[0] * record):
            return None
        if in_memory and cache not in _memo:
            _memo.clear()
            images = np.empty(shape[0] * record, np.uint8)
            for k, path in enumerate(files):
                with open(path, "rb", buffering=0) as f:
                    f.readinto(memoryview(images)[k * per_file * record:(k + 1) * per_file * record])
            _memo[cache] = _host_tensor(images.reshape(shape))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    for path, what in meta["warnings"]:
        _warn_once(path, what)
    return _memo[cache] if in_memory else np.array(files)


def _temp_dir(root, name):
    """A fresh directory under root to build a cache in, or None if root is not writable."""
    try:
        os.makedirs(root, exist_ok=True)
        tmp = os.path.join(root, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        os.mkdir(tmp)
        return tmp
    except OSError:
        return None


class _CacheWriter:
    """Writes image k's raw bytes at its place in a cache of `per_file` images to a file (see _cache_files)."""

    def __init__(self, cache, per_file, record):
        self.cache, self.per_file, self.record = cache, per_file, record
        self.file, self.index = None, None

    def _seek(self, k):
        index = k // self.per_file
        if index != self.index:
            self.close()
            path = _cache_file(self.cache, index)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.file, self.index = open(path, "r+b" if os.path.exists(path) else "w+b"), index
        self.file.seek(k % self.per_file * self.record)

    def write(self, k, raw):
        self._seek(k)
        self.file.write(raw)

    def read(self, k):
        self._seek(k)
        return self.file.read(self.record)

    def close(self):
        if self.file is not None:
            self.file.close()
        self.file, self.index = None, None


def _decode_folder(data_dir, paths, image_size, channels, large, writer, keep):
    """Decode each usable file of a folder once, in sorted path order -> (its images if keep, else None; their
    count N; [[file, what]] for each damaged file, as warned), image k also given to writer (unless None).

    Small folders (fewer than FULL_DECODE_MAX_FILES files): the files that fail the cheap check or the decode are
    left out. Large ones: those failing the cheap check, or in a decoded sample, are left out (or the folder is
    refused, before the long decode), and a file that fails the full decode has the next file in sorted order
    that decodes stand in for it, as it did when large folders were decoded epoch after epoch.
    """
    problems = _cheap_problems(paths)
    if large:
        paths = _drop_damaged(data_dir, paths, problems)
        sample = paths[::max(1, len(paths) // DECODE_SAMPLE)]
        _drop_damaged(data_dir, paths, _decode_all(sample, image_size, channels, keep=False)[1], len(sample))
        warnings = [[path, f"it {problems[path]}"] for path in sorted(problems)]
        candidates = paths
    else:
        candidates = [path for path in paths if path not in problems]
    images = np.empty((len(candidates), image_size, image_size, channels), np.uint8) if keep else None
    decoded = []
    for ks, batch in _decode_batches(candidates, image_size, channels):
        for k, image in zip(ks.tolist(), batch):
            position = k if large else len(decoded)  # small folders: the decodable files, packed
            decoded.append(k)
            if keep:
                images[position] = image
            if writer is not None:
                writer.write(position, image.tobytes())
    if not large:
        failed = set(range(len(candidates))) - set(decoded)
        problems.update({candidates[k]: "is corrupt (TensorFlow cannot decode it)" for k in failed})
        _drop_damaged(data_dir, paths, problems)  # refuses the folder if too many are damaged, warns otherwise
        warnings = [[path, f"it {problems[path]}"] for path in sorted(problems)]
        return (images[:len(decoded)] if keep else None), len(decoded), warnings
    good = sorted(decoded)
    if not good:
        raise DataError(f"None of the image files under {data_dir} can be decoded by TensorFlow; "
                        "pass --data_dir pointing at a folder of JPEG/PNG images.")
    for k in sorted(set(range(len(candidates))) - set(good)):
        j = good[bisect.bisect(good, k) % len(good)]  # the next file in sorted path order that decodes
        what = f"{candidates[j]} stands in for it every time it is drawn"
        _warn_once(candidates[k], what)
        warnings.append([candidates[k], what])
        if keep:
            images[k] = images[j]
        if writer is not None:
            writer.write(k, writer.read(j))
    return images, len(candidates), warnings


def _list_images(data_dir):
    """Sorted JPEG/PNG paths under data_dir (recursively, leaving out a cache inside it)."""
    _require_dir(data_dir, "a folder of .jpg/.jpeg/.png images")
    paths = []
    # followlinks: dataset trees are often assembled from symlinked category folders (LSUN).
    for root, dirs, names in os.walk(data_dir, followlinks=True):
        dirs[:] = [d for d in dirs if d != CACHE_DIR_NAME]
        paths += [os.path.join(root, f) for f in names if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not paths:
        raise DataError(f"No .jpg/.jpeg/.png images found under {data_dir}; "
                        "pass --data_dir pointing at an image folder.")
    return sorted(paths)


def _scan_folder(data_dir, limit=None):
    """Sorted JPEG/PNG paths under data_dir (recursively), the first `limit` of them, and {path: problem} for
    those failing the cheap check."""
    paths = _list_images(data_dir)[:limit]
    return paths, _cheap_problems(paths)


def _cheap_problems(paths):
    """{path: problem} for the files failing the cheap check (_image_problem)."""
    with ThreadPoolExecutor(max_workers=16) as pool:  # I/O bound: threads overlap the reads
        return {path: problem for path, problem in zip(paths, pool.map(_image_problem, paths)) if problem}


def _decode_all(paths, image_size, channels, keep=True):
    """Decode every file with the pipeline's own decoder -> (uint8 images of the files that decode, in order, or
    None if not keep; {path: problem} for the files that do not)."""
    decoded, images = set(), []
    for k, batch in _decode_batches(paths, image_size, channels):
        decoded.update(k.tolist())
        if keep:
            images.append(batch)
    failed = {path: "is corrupt (TensorFlow cannot decode it)" for k, path in enumerate(paths) if k not in decoded}
    if not keep:
        return None, failed
    return (np.concatenate(images) if images else np.zeros((0, image_size, image_size, channels), np.uint8)), failed


def _decode_batches(paths, image_size, channels):
    """(positions in paths, uint8 images) of the files that decode, in order, a few hundred at a time."""
    decode = (tf.data.Dataset.from_tensor_slices((tf.range(len(paths)), tf.constant(paths, tf.string)))
              .map(lambda k, path: (k, _decode_file(path, image_size, channels)),
                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
              .ignore_errors()  # the positions that come out say which files decoded
              .batch(256))
    for k, batch in decode:
        yield k.numpy(), batch.numpy()


def _drop_damaged(data_dir, paths, problems, sampled=None):
    """paths without the damaged ones, each named in a warning; a DataError if more than MAX_DAMAGED of the files
    checked (all of them, or a sample of `sampled`) are damaged."""
    checked = sampled or len(paths)
    if len(problems) > MAX_DAMAGED * checked:
        first = min(problems)
        raise DataError(f"{len(problems)} of the {checked} {'sampled ' if sampled else ''}image files under "
                        f"{data_dir} {'is' if len(problems) == 1 else 'are'} damaged, more than the "
                        f"{MAX_DAMAGED:.0%} a run may skip (e.g. image file {first} {problems[first]}); "
                        "delete or replace them.")
    for path in sorted(problems):
        _warn_once(path, f"it {problems[path]}")
    return [path for path in paths if path not in problems]


_warned = set()  # damaged files already named on stderr by this process: once each, not once per epoch or call
_warned_lock = threading.Lock()  # pipeline threads may report the same file at the same time


def _warn_once(path, what):
    with _warned_lock:
        if path in _warned:
            return
        _warned.add(path)
    print(f"warning: skipping damaged image file {path}: {what}.", file=sys.stderr, flush=True)


def _image_problem(path):
    """What is wrong with an image file, or None. Cheap: headers, PNG chunk CRCs and the JPEG end marker, which
    catches non-images and the usual truncated downloads without decoding pixels (~200k files in under a minute)."""
    try:
        with Image.open(path) as image:
            kind = image.format
            image.verify()  # PNG: reads every chunk and checks its CRC; JPEG: headers only
        if kind not in ("PNG", "JPEG", "MPO"):  # MPO: multi-picture JPEG from cameras, decodes as JPEG
            return f"is {kind}, not JPEG or PNG"
        if kind != "PNG":
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 4096))
                # TF's decoder fails if the data ends before the end-of-image marker; bytes after it are ignored.
                if b"\xff\xd9" not in f.read():
                    return "is truncated (no JPEG end marker)"
    except Exception as e:  # PIL raises many types for bad files (UnidentifiedImageError, SyntaxError, OSError, ...)
        return f"is corrupt or not an image ({type(e).__name__})"
    return None


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


def _load_cifar10(data_dir, split):
    """CIFAR-10 as uint8 (N, 32, 32, 3) from the python-pickle release (folder, its parent, or the .tar.gz)."""
    if data_dir is None:
        return _keras_load("cifar10", split)
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
            batches = []
            for name in names:
                where = os.path.join(folder, name)
                with open(where, "rb") as f:
                    batches.append(_parse_cifar_batch(f.read(), where))
        else:
            # One pass in archive order: the release stores batches out of order, and seeking back in gzip
            # means decompressing again from the start.
            with tarfile.open(archive, "r:gz") as tar:
                found = {os.path.basename(m.name): tar.extractfile(m).read()
                         for m in tar if m.isfile() and os.path.basename(m.name) in names}
            batches = [_parse_cifar_batch(found[name], f"{archive}:{name}") for name in names]
    except (OSError, EOFError, KeyError, zlib.error, tarfile.TarError) as e:
        raise DataError(f"Could not read CIFAR-10 from {where} ({type(e).__name__}); "
                        "re-download cifar-10-python.tar.gz.") from e
    return np.concatenate(batches)


def _parse_cifar_batch(raw, where):
    """One pickled batch, a dict whose b"data" is (N, 3072) uint8 stored channel-major -> (N, 32, 32, 3).
    Like Keras, this unpickles whatever data_dir holds: point it only at data you trust."""
    try:
        data = pickle.loads(raw, encoding="bytes")[b"data"]
        return np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as e:  # a damaged pickle can raise nearly anything (EOFError, UnpicklingError, ValueError, ...)
        raise DataError(f"{where} is not a readable CIFAR-10 batch ({type(e).__name__}); "
                        "re-download cifar-10-python.tar.gz.") from e


def _keras_load(name, split):
    """Keras' downloader (which reuses its cache in ~/.keras/datasets) as the last resort."""
    import keras  # deferred: only needed when no local copy exists

    try:
        (x_train, _), (x_test, _) = getattr(keras.datasets, name).load_data()
    except Exception as e:  # Keras re-raises URLError/HTTPError as a bare Exception
        raise DataError(f"Could not download {_PRETTY[name]} (no internet?); {_OFFLINE_HINT[name]}.") from e
    images = x_train if split == "train" else x_test
    return images if images.ndim == 4 else images[..., None]

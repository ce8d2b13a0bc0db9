"""Datasets -> infinite tf.data pipelines of [-1, 1] image batches, plus image I/O for sample grids.

Sources: Fashion-MNIST (default), MNIST, CIFAR-10, and any folder tree of JPEG/PNG files (extracted CelebA, LSUN).
The small datasets are resized and channel-converted once at load time and kept in memory as uint8. Folders are
decoded lazily inside the pipeline, after every file has passed a cheap up-front check, so that a bad file is
reported in one sentence before training starts instead of as a TF traceback hours into a run.

Data order. A resumed run should continue exactly as if it had never stopped, including which images it sees
next. A `Dataset.shuffle` buffer, or a checkpointed tf.data iterator, would have to be saved with every checkpoint
(large, and tied to the pipeline's exact structure). Instead the order is a pure function of (seed, batch number):

    epoch e  = argsort(stateless_uniform([n], seed=[seed, e])), a fresh permutation of all n images,
               cut into per_epoch = n // batch_size full batches (the n % batch_size left over sit out that epoch)
    batch b  = batch b % per_epoch of epoch b // per_epoch

`make_dataset(..., start_batch=k)` regenerates epoch k // per_epoch and skips k % per_epoch batches of *indices*
(nothing is decoded for them), so it yields exactly what an uninterrupted run would have yielded after k batches.
The only state a training script has to save is its own batch counter.
"""
import gzip
import os
import pickle
import tarfile
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from PIL import Image

DATASETS = ("fashion_mnist", "mnist", "cifar10", "folder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Where Debian's `dataset-fashion-mnist` package puts the IDX files; a module constant so tests can move it.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_IDX_STEMS = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
_IDX_IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, rows, cols)
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

def load_images(name, data_dir=None, image_size=32, channels=1, split="train", limit=None):
    """Whole dataset (or its first `limit` images) as uint8 (N, image_size, image_size, channels).

    For "folder", `split` is ignored and the files are taken in sorted path order.
    """
    _check_args(name, image_size, channels, split)
    if name == "folder":
        paths = _list_images(data_dir, limit)
        decoded = (tf.data.Dataset.from_tensor_slices(paths)
                   .map(lambda p: _decode_file(p, image_size, channels),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                   .batch(256))
        return np.concatenate([batch.numpy() for batch in decoded])
    raw = _load_cifar10(data_dir, split) if name == "cifar10" else _load_idx_dataset(name, data_dir, split)
    return _convert_all(raw[:limit], image_size, channels)


def make_dataset(name, data_dir=None, image_size=32, channels=1, batch_size=64, seed=0, start_batch=0):
    """Infinite dataset of float32 [batch_size, image_size, image_size, channels] batches in [-1, 1].

    Batch b is a pure function of (seed, b); start_batch=k resumes at batch k (see the module docstring).
    Every shape is static, so a tf.function traced on one batch never retraces.
    """
    _check_args(name, image_size, channels)
    if batch_size < 1 or start_batch < 0:
        raise DataError(f"batch_size must be >= 1 and start_batch >= 0, got {batch_size} and {start_batch}.")
    if name == "folder":
        source = _list_images(data_dir)  # paths only: images are decoded file by file inside the pipeline
    else:
        source = load_images(name, data_dir, image_size, channels)
    # Pinned to the host: tf.data runs there, and a GPU copy of the whole dataset would only waste memory.
    with tf.device("/cpu:0"):
        source = tf.constant(source)
    n = int(source.shape[0])
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise DataError(f"The {name} data has only {n} images, fewer than batch_size={batch_size}; "
                        "lower --batch_size or add images.")

    def epoch_batches(epoch):
        # float32 draws tie now and then (~200 pairs at n=60k); a stable sort keeps the permutation deterministic.
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        order = tf.argsort(keys, stable=True)
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order[:per_epoch * batch_size], [per_epoch, batch_size]))

    indices = (tf.data.Dataset.counter(start_batch // per_epoch)
               .flat_map(epoch_batches)
               .skip(start_batch % per_epoch))
    if name == "folder":
        # One map call per file lets AUTOTUNE spread decoding over cores; re-batching the unbatched stream of
        # full index batches regroups them exactly.
        images = (indices.unbatch()
                  .map(lambda i: _decode_file(tf.gather(source, i), image_size, channels),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                  .batch(batch_size, drop_remainder=True))
    else:
        images = indices.map(lambda idx: tf.gather(source, idx),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return (images.map(lambda x: tf.cast(x, tf.float32) / 127.5 - 1.0,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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

    The PNG is written to a temporary file in the same directory and renamed over `path`, so a crash leaves
    either the old file or the complete new one, never a half-written PNG.
    """
    array = np.asarray(array_uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(f"save_image wants uint8 (H, W), (H, W, 1) or (H, W, 3), got {array.dtype} {array.shape}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would survive the rename; open(..., "xb") honours the umask.
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            Image.fromarray(array).save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---------------------------------------------------------------------------------------------- helpers

def _check_args(name, image_size, channels, split="train"):
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    if split not in _IDX_STEMS:
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


def _resize_uint8(images, image_size, channels):
    """uint8 (N, h, w, c) -> bilinear resize -> RGB<->gray -> rounded uint8. Shared by every source, so folder
    images decoded inside tf.data match what load_images returns for them bit for bit."""
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
    # channels=3 turns grayscale, palette and RGBA files alike into RGB; _resize_uint8 then picks the output.
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = _resize_uint8(image[None, top:top + side, left:left + side], image_size, channels)[0]
    image.set_shape([image_size, image_size, channels])
    return image


def _list_images(data_dir, limit=None):
    """Sorted JPEG/PNG paths under data_dir (recursively), the first `limit` of them, each checked cheaply."""
    _require_dir(data_dir, "a folder of .jpg/.jpeg/.png images")
    # followlinks: dataset trees are often assembled from symlinked category folders (LSUN).
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(data_dir, followlinks=True)
                   for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise DataError(f"No .jpg/.jpeg/.png images found under {data_dir}; "
                        "pass --data_dir pointing at an image folder.")
    paths = paths[:limit]
    # The check is I/O bound, so threads overlap the reads; chunks let the first bad file stop the scan early.
    with ThreadPoolExecutor(max_workers=16) as pool:
        for start in range(0, len(paths), 4096):
            chunk = paths[start:start + 4096]
            for path, problem in zip(chunk, pool.map(_image_problem, chunk)):
                if problem:
                    raise DataError(f"Image file {path} {problem}; delete or replace it.")
    return paths


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
        path = _find_idx(data_dir, split)
        if path is None:
            raise DataError(f"No {_IDX_STEMS[split]}(.gz) found in {data_dir}; "
                            f"pass --data_dir holding the original {_PRETTY[name]} IDX files.")
        return _read_idx_images(path)
    if name == "fashion_mnist":
        keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        for directory in (DEBIAN_FASHION_MNIST, os.path.join(keras_home, "datasets", "fashion-mnist")):
            path = _find_idx(directory, split)
            if path is not None:
                return _read_idx_images(path)
    return _keras_load(name, split)


def _find_idx(directory, split):
    for name in (_IDX_STEMS[split], _IDX_STEMS[split] + ".gz"):
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return None


def _read_idx_images(path):
    """Original (Fashion-)MNIST image file, gzipped or not -> uint8 (N, rows, cols, 1)."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # missing, unreadable, truncated or corrupt gzip
        raise DataError(f"Could not read {path} ({type(e).__name__}); "
                        "re-download it or pass another --data_dir.") from e
    magic, n, rows, cols = (int(v) for v in np.frombuffer(raw[:16].ljust(16, b"\0"), ">u4"))
    if magic != _IDX_IMAGE_MAGIC or len(raw) != 16 + n * rows * cols:
        raise DataError(f"{path} is truncated or not an IDX image file; re-download it or pass another --data_dir.")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols, 1).copy()


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

"""Image folders -> uint8 images at the training size: the walk, the damaged-file checks, the decoded-image cache.

This is data.py's "folder" dataset (extracted CelebA, LSUN, any tree of JPEG/PNG files): load_images() decodes a
folder into memory, source() gives make_dataset a folder's images through its cache. The walk (list_images)
follows symbolic links, as trees assembled from linked category folders need, and enters each folder once. Images
are centre-cropped to a square and resized with data.py's resize, so the cached pixels are what load_images
returns, bit for bit. PNGs keep their alpha (composited on black) and 16-bit depth (scaled exactly); CMYK and
grayscale JPEGs become RGB as Pillow converts them.

Folder cache. A folder's images are decoded once into a cache, a directory of raw uint8 files (image_size^2 *
channels bytes per image, PACK images to a file, or one per file when they are read from disk), under
$GAN_CACHE/folders if that is set, else in `.gan-cache` inside the folder (or ~/.cache/tf-gans/folders if the folder
is read-only). Its name holds a digest of the folder's listing (every file's path, size and modification time), the
image size and channels, and the decoder's version, so later runs reuse it and a changed folder gets a new one (the
old one is deleted). It is built in a folder of a random name (files.atomic_path) and renamed into place when
complete, so two runs building it at once each build their own and the first rename wins. A cache is read only if
its meta.json says what its name says and its files hold exactly the images it counts; any other is deleted and
built again. The images then sit in memory if they fit MEMORY_BUDGET_GB (8 GB; $GAN_DATA_MEMORY_GB overrides), else
the pipeline reads the file of each image it draws. Either way the steady-state pipeline is TensorFlow ops only.

Damaged files. Every file gets a cheap check before the cache is built (a link to nothing, a pipe or device, an
unreadable file; the headers; more than MAX_PIXELS pixels, from the header; PNG chunk CRCs; the JPEG end marker),
and each file that passes is then decoded by the pipeline's own decoder. In a folder of fewer than
FULL_DECODE_MAX_FILES files, the files that fail either are left out before the data order is drawn, with one
warning each on stderr; if more than 1% of the files fail, the folder is refused in one sentence. A larger folder is
refused on the cheap check and a decoded, evenly spaced sample of DECODE_SAMPLE files (before the long decode), and
a file failing only the full decode is replaced by the next file in sorted path order that decodes, again with a
warning. (A stand-in, not a gap: tf.data's ignore_errors would drop the image and shift every later one by a place.)
A run that finds the cache warns about the same files again.
"""
import bisect
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from PIL import Image

import data  # DataError, the one resize and the in-memory store; data.py imports this module for its folders
import files

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Folders with fewer files lose the files that fail to decode; larger ones are checked on a sample before the long
# decode (about 1 ms per CelebA-sized JPEG per core) and get stand-ins (see the module docstring). A module
# constant so tests can lower it.
FULL_DECODE_MAX_FILES = 20_000
DECODE_SAMPLE = 1000  # larger folders have this many files, evenly spaced, decoded up front
MAX_DAMAGED = 0.01  # the fraction of a folder's files that may be damaged and skipped before it is refused
# Larger images are damaged files, found from their header: a 13,000 x 13,000 PNG of zeros is 170 KB on disk and
# 500 MB decoded. Pillow's own limit is 89 Mpx.
MAX_PIXELS = 64_000_000
# A folder's decoded images are held in memory up to this size ($GAN_DATA_MEMORY_GB overrides it), else read from
# the cache's files (one per image) batch by batch. CelebA at 64x64 RGB is 2.5 GB, at 128x128 10 GB.
MEMORY_BUDGET_GB = 8
CACHE_DIR_NAME = ".gan-cache"  # a folder's decoded-image cache, next to the data unless $GAN_CACHE is set
CACHE_VERSION = 1  # part of every cache's name: raise it when a change to the decoder changes any pixel
PACK = 10_000  # images per cache file when the images are held in memory (one file per image otherwise)


# ---------------------------------------------------------------------------------------------- for data.py

def load_images(data_dir, image_size, channels, limit=None):
    """A folder's files in sorted path order (the first `limit` of them), decoded -> uint8 (N, image_size,
    image_size, channels), damaged files left out with a warning each (more than MAX_DAMAGED of them: a
    DataError)."""
    paths, problems = _scan_folder(data_dir, limit)
    images, failed = _decode_all([p for p in paths if p not in problems], image_size, channels)
    _drop_damaged(data_dir, paths, {**problems, **failed})
    return images


def source(data_dir, image_size, channels):
    """A folder's usable images at the training size, each decoded once -> (uint8 (N, size, size, channels) held in
    memory, True) if they fit the memory budget, else (the N cache files holding them, one image each, False)."""
    paths = list_images(data_dir)
    large = len(paths) >= FULL_DECODE_MAX_FILES
    in_memory = len(paths) * image_size * image_size * channels <= _memory_budget()
    base, prefix = _cache_name(data_dir, paths, image_size, channels, large)
    roots = _cache_roots(data_dir)
    for root in roots:
        for per_file in ((PACK, 1) if in_memory else (1,)):  # either layout holds what memory needs
            found = _open_cache(os.path.join(root, f"{base}-{per_file}"), per_file, image_size, channels, in_memory)
            if found is not None:
                return found, in_memory
    # In memory: images packed PACK to a file (fast to load); else one file per image (the pipeline reads any one).
    name = f"{base}-{PACK if in_memory else 1}"
    images, count, final = _build_cache(data_dir, paths, roots, name, image_size, channels, large, in_memory)
    if final is None:  # nowhere to write it: decoded into memory only
        return images, True
    for stale in os.listdir(os.path.dirname(final)):  # this folder's caches from before it changed
        if stale.startswith(prefix) and not stale.startswith(base):  # (its other layout stays)
            shutil.rmtree(os.path.join(os.path.dirname(final), stale), ignore_errors=True)
    if in_memory:
        return data.keep(final, lambda: images), True
    return np.array(_cache_files(final, count, 1)), False


def read_cached(path, image_size, channels):
    """uint8 [image_size, image_size, channels] from a one-image cache file (raw bytes: nothing to decode)."""
    return tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.uint8), [image_size, image_size, channels])


# ---------------------------------------------------------------------------------------------- walking and checking

def list_images(data_dir):
    """Sorted JPEG/PNG paths under data_dir, recursively, leaving out a cache inside it.

    Symbolic links are followed (dataset trees are often assembled from symlinked category folders, as LSUN's), but
    each folder is walked once: a folder already seen (the same device and inode) is skipped, so a link to a parent
    or to itself lists nothing twice and ends. Folders are walked in sorted order, depth first, so of two paths to
    one folder the first in sorted order is kept. A link to nothing is listed, and found damaged by the cheap check.
    """
    data._require_dir(data_dir, "a folder of .jpg/.jpeg/.png images")
    paths, seen, todo = [], set(), [data_dir]
    while todo:
        folder = todo.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as entries:
                entries = sorted(entries, key=lambda e: e.name)
        except OSError:  # an unreadable folder is left out, as os.walk does
            continue
        todo += reversed([e.path for e in entries if e.name != CACHE_DIR_NAME and _is_dir(e)])  # next: the first
        paths += [e.path for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS) and not _is_dir(e)]
    if not paths:
        raise data.DataError(f"No .jpg/.jpeg/.png images found under {data_dir}; "
                             "pass --data_dir pointing at an image folder.")
    return sorted(paths)


def _is_dir(entry):
    try:
        return entry.is_dir()  # follows a link
    except OSError:
        return False


def _scan_folder(data_dir, limit=None):
    """Sorted JPEG/PNG paths under data_dir (recursively), the first `limit` of them, and {path: problem} for
    those failing the cheap check."""
    paths = list_images(data_dir)[:limit]
    return paths, _cheap_problems(paths)


def _cheap_problems(paths):
    """{path: problem} for the files failing the cheap check (_image_problem)."""
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=16) as pool:  # I/O bound: threads overlap reads
        # Pillow warns as it opens an image above its own limit; MAX_PIXELS, lower, refuses those files here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return {path: problem for path, problem in zip(paths, pool.map(_image_problem, paths)) if problem}


def _image_problem(path):
    """What is wrong with an image file, or None. Cheap: the file's kind, headers, the pixel count, PNG chunk CRCs
    and the JPEG end marker, which catches links to nothing, non-images, decompression bombs and the usual truncated
    downloads without decoding pixels (~200k files in under a minute)."""
    try:
        info = os.stat(path)
    except OSError as e:
        missing = isinstance(e, FileNotFoundError) and os.path.islink(path)
        return "is a link to a missing file" if missing else f"cannot be read ({e.strerror})"
    if not stat.S_ISREG(info.st_mode):  # a pipe or a device: reading it may wait forever or never end
        return "is not a regular file"
    try:
        f = open(path, "rb")
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    with f:
        try:
            with Image.open(f) as image:  # reads the header only
                kind, (width, height) = image.format, image.size
                if width * height > MAX_PIXELS:
                    return f"has {width}x{height} pixels, more than the {MAX_PIXELS:,} a run decodes"
                image.verify()  # PNG: reads every chunk and checks its CRC; JPEG: headers only
            if kind not in ("PNG", "JPEG", "MPO"):  # MPO: multi-picture JPEG from cameras, decodes as JPEG
                return f"is {kind}, not JPEG or PNG"
            if kind != "PNG":
                f.seek(max(0, info.st_size - 4096))
                # TF's decoder fails if the data ends before the end-of-image marker; bytes after it are ignored.
                if b"\xff\xd9" not in f.read():
                    return "is truncated (no JPEG end marker)"
        except Image.DecompressionBombError:  # above twice Pillow's limit: refused as it opens
            return f"has more pixels than the {MAX_PIXELS:,} a run decodes"
        except Exception as e:  # PIL raises many types for bad files (UnidentifiedImageError, SyntaxError, ...)
            return f"is corrupt or not an image ({type(e).__name__})"
    return None


def _drop_damaged(data_dir, paths, problems, sampled=None):
    """paths without the damaged ones, each named in a warning; a DataError if more than MAX_DAMAGED of the files
    checked (all of them, or a sample of `sampled`) are damaged."""
    checked = sampled or len(paths)
    if len(problems) > MAX_DAMAGED * checked:
        first = min(problems)
        raise data.DataError(f"{len(problems)} of the {checked} {'sampled ' if sampled else ''}image files under "
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


# ---------------------------------------------------------------------------------------------- decoding

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
    image = data._resize_uint8(image[None, top:top + side, left:left + side], image_size, channels)[0]
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


def _decode_folder(data_dir, paths, image_size, channels, large, writer, keep):
    """Decode each usable file of a folder once, in sorted path order -> (its images if keep, else None; their
    count N; [[file, what]] for each damaged file, as warned), image k also given to writer (unless None).

    Small folders (fewer than FULL_DECODE_MAX_FILES files): the files that fail the cheap check or the decode are
    left out. Large ones: those failing the cheap check, or in a decoded sample, are left out (or the folder is
    refused, before the long decode), and a file that fails the full decode has the next file in sorted order
    that decodes stand in for it, so that every other file keeps its place in the data order.
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
        raise data.DataError(f"None of the image files under {data_dir} can be decoded by TensorFlow; "
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


# ---------------------------------------------------------------------------------------------- the cache

def _memory_budget():
    """Bytes of decoded folder images a run may hold in memory: MEMORY_BUDGET_GB, or $GAN_DATA_MEMORY_GB."""
    value = os.environ.get("GAN_DATA_MEMORY_GB") or MEMORY_BUDGET_GB
    try:
        return float(value) * 2 ** 30
    except ValueError:
        raise data.DataError(f"$GAN_DATA_MEMORY_GB must be a number of gigabytes, got {value!r}.") from None


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
        try:
            info = os.stat(path)
            entry = f"{info.st_size}\t{info.st_mtime_ns}"
        except OSError:  # a link to nothing (or gone): a damaged file, left out like any other
            entry = "missing"
        # path[len(data_dir):]: the path below the folder (list_images' paths all start with data_dir)
        listing.update(f"{path[len(data_dir):]}\t{entry}\n".encode())
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


def _open_cache(cache, per_file, image_size, channels, in_memory):
    """The images (in_memory) or the one-image files of the complete cache at `cache`, its damaged files warned
    about again; None if there is none. A cache that is not what its name and metadata say is deleted (to be built
    again), never read."""
    if not os.path.lexists(cache):
        return None
    meta = _cache_meta(cache, per_file, image_size, channels)
    if meta is None:
        _discard(cache)
        return None
    shape = meta["shape"]
    found = _cache_files(cache, shape[0], per_file)
    try:
        images = data.keep(cache, lambda: _read_images(found, shape, per_file)) if in_memory else np.array(found)
    except OSError:
        return None
    for path, what in meta["warnings"]:
        _warn_once(path, what)
    return images


def _cache_meta(cache, per_file, image_size, channels):
    """A cache's metadata if it says what the cache's name says (the decoder's version, `per_file`, the image
    shape, at least one image, the warnings as [file, what] pairs) and the cache holds exactly the files of that
    many images, each of its size; else None."""
    try:
        with open(os.path.join(cache, "meta.json")) as f:
            meta = json.load(f)
        shape, warned = meta["shape"], meta["warnings"]
        if not (meta["version"] == CACHE_VERSION and meta["per_file"] == per_file
                and isinstance(shape, list) and all(type(v) is int for v in shape) and len(shape) == 4
                and shape[0] >= 1 and shape[1:] == [image_size, image_size, channels] and isinstance(warned, list)
                and all(isinstance(w, list) and len(w) == 2 and all(isinstance(t, str) for t in w) for w in warned)):
            return None
        record = image_size * image_size * channels
        sizes = {path: min(per_file, shape[0] - k * per_file) * record
                 for k, path in enumerate(_cache_files(cache, shape[0], per_file))}
        present = {os.path.join(folder, name) for folder, _, names in os.walk(cache) for name in names}
        if present - {os.path.join(cache, "meta.json")} != set(sizes) or any(
                os.path.getsize(path) != size for path, size in sizes.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError):  # ValueError: not JSON; the others: not a dict of lists
        return None
    return meta


def _discard(cache):
    """Delete a damaged cache: renamed aside first, so that its name is free at once for the one built next."""
    aside = os.path.join(os.path.dirname(cache), f".{os.path.basename(cache)}.{secrets.token_hex(8)}.damaged")
    try:
        os.rename(cache, aside)
    except OSError:  # another run moved it first, or it cannot be moved: building a new one then says so
        return
    shutil.rmtree(aside, ignore_errors=True)  # never follows a link


def _read_images(paths, shape, per_file):
    """A cache's files of `per_file` images each -> uint8 images of `shape`."""
    images = np.empty(int(np.prod(shape)), np.uint8)
    chunk = per_file * int(np.prod(shape[1:]))
    for k, path in enumerate(paths):
        with open(path, "rb", buffering=0) as f:
            f.readinto(memoryview(images)[k * chunk:(k + 1) * chunk])
    return images.reshape(shape)


def _build_cache(data_dir, paths, roots, name, image_size, channels, large, in_memory):
    """Decode a folder's files into a new cache `name` in the first root that can hold it -> (the images if
    in_memory, else None; their count; the cache's path, or None if no root can hold it and in_memory)."""
    per_file, record = (PACK if in_memory else 1), image_size * image_size * channels
    size = f"{len(paths) * record / 2 ** 30:.2g} GB"
    tmp = final = None
    try:
        with contextlib.ExitStack() as stack:
            tmp = _temp_dir(stack, roots, name)  # renamed to root/name as the stack closes without an error
            if tmp is None and not in_memory:
                raise data.DataError(f"Cannot write the decoded-image cache of {data_dir} ({size}) under "
                                     f"{' or '.join(roots)}; set $GAN_CACHE to a writable folder with that much "
                                     "free space.")
            where = (f"into {os.path.dirname(tmp)} (later runs reuse it)" if tmp else
                     "(no writable cache folder: later runs decode again)")
            print(f"note: decoding the {len(paths)} image files under {data_dir} once, at "
                  f"{image_size}x{image_size}x{channels}, {where}", file=sys.stderr, flush=True)
            writer = None if tmp is None else _CacheWriter(tmp, per_file, record)
            if writer is not None:
                stack.callback(writer.close)  # closed before the rename
            images, count, warned = _decode_folder(data_dir, paths, image_size, channels, large, writer, in_memory)
            if tmp is None:
                return images, count, None
            writer.close()
            files.write_text(os.path.join(tmp, "meta.json"), json.dumps(dict(  # last: a cache with it is complete
                version=CACHE_VERSION, tensorflow=tf.__version__, data_dir=os.path.abspath(data_dir),
                shape=[count, image_size, image_size, channels], per_file=per_file, warnings=warned)))
            final = os.path.join(os.path.dirname(tmp), name)
    except OSError as e:
        # The rename fails if another run published the same cache first: the same listing decoded by the same
        # code, so the same images. Use it (ours is gone with the stack).
        if final is None or _cache_meta(final, per_file, image_size, channels) is None:
            where = os.path.dirname(tmp) if tmp else " or ".join(roots)
            raise data.DataError(f"Cannot write the decoded-image cache of {data_dir} under {where} "
                                 f"({e.strerror or e}); free {size} there or set $GAN_CACHE to another folder.") from e
    return images, count, final


def _temp_dir(stack, roots, name):
    """A new empty folder with a random name in the first root that can hold one (files.atomic_path), renamed to
    root/name when `stack` closes without an error and deleted otherwise -> its path, or None if no root can."""
    for root in roots:
        try:
            return stack.enter_context(files.atomic_path(os.path.join(root, name), folder=True))
        except OSError:
            continue
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

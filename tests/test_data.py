"""Tests for data.py and folders.py on tiny hand-made data (IDX, CIFAR pickles, image folders), plus one real
Fashion-MNIST load."""
import gzip
import io
import os
import pickle
import shutil
import struct
import sys
import tarfile
import urllib.error
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import folders  # noqa: E402
from data import DataError  # noqa: E402


# ---------------------------------------------------------------------------------------------- helpers

def write_idx(path, images):
    """images: uint8 (N, rows, cols) -> original IDX3 file, gzipped when path ends in .gz."""
    raw = struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(raw)


def id_images(n, size=4):
    """n images whose every pixel is 20 * index, so an image's identity survives the [-1, 1] round trip."""
    return np.repeat(np.arange(n, dtype=np.uint8) * 20, size * size).reshape(n, size, size)


def ids(batch):
    """Float [-1, 1] batch of id_images -> their indices."""
    return np.round((batch[:, 0, 0, 0] + 1.0) * 127.5 / 20).astype(int).tolist()


@pytest.fixture(autouse=True)
def folder_cache_defaults(monkeypatch):
    """Folder caches next to the data, in memory when small, whatever the environment running the tests says."""
    monkeypatch.delenv("GAN_CACHE", raising=False)
    monkeypatch.delenv("GAN_DATA_MEMORY_GB", raising=False)


@pytest.fixture
def idx_dir(tmp_path):
    """10 train images (gzipped) and 3 test images (plain) of 4x4 pixels."""
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", id_images(10))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", id_images(3) + 1)
    return str(tmp_path)


def take(ds, k):
    return [b.numpy() for b in ds.take(k)]


def assert_one_sentence_naming(err, path):
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message


def save_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


class Python2Pickler(pickle._Pickler):
    """Pickles as Python 2 did, which wrote the CIFAR-10 release: text and bytes alike as byte strings (Python 3's
    protocol 2 writes bytes as calls to _codecs.encode, which no batch of the release names)."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_byte_string(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        self.write((pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256 else
                    pickle.BINSTRING + struct.pack("<i", len(raw))) + raw)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_byte_string


def release_pickle(obj):
    """obj pickled as the CIFAR-10 release's batches are: Python 2, protocol 2, NumPy 1's numpy.core.multiarray."""
    f = io.BytesIO()
    Python2Pickler(f, protocol=2).dump(obj)
    return f.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_pickle(n, offset):
    """A CIFAR batch dict: image i has R = offset + i, G = 100, B = 200 (stored channel-major like the release),
    label (offset + i) % 10; pickled as the release is."""
    images = np.zeros((n, 3, 32, 32), np.uint8)
    images[:, 0] = (offset + np.arange(n))[:, None, None]
    images[:, 1], images[:, 2] = 100, 200
    labels = [(offset + i) % 10 for i in range(n)]
    return release_pickle({b"batch_label": "training batch", b"labels": labels, b"data": images.reshape(n, 3072),
                           b"filenames": [f"image_{offset + i}.png" for i in range(n)]})


@pytest.fixture
def cifar_dir(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(cifar_pickle(2, offset=10 * i))
    (folder / "test_batch").write_bytes(cifar_pickle(3, offset=0))
    return tmp_path


# ---------------------------------------------------------------------------------------------- IDX sources

@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_idx_gz_and_plain(idx_dir, name):
    train = data.load_images(name, idx_dir, image_size=4, split="train")
    test = data.load_images(name, idx_dir, image_size=4, split="test")
    assert train.dtype == np.uint8 and train.shape == (10, 4, 4, 1)
    np.testing.assert_array_equal(train[..., 0], id_images(10))
    np.testing.assert_array_equal(test[..., 0], id_images(3) + 1)
    assert data.load_images(name, idx_dir, image_size=4, limit=4).shape == (4, 4, 4, 1)


def test_idx_resize_and_gray_to_rgb(idx_dir):
    big = data.load_images("mnist", idx_dir, image_size=8, channels=3)
    assert big.shape == (10, 8, 8, 3) and big.dtype == np.uint8
    np.testing.assert_array_equal(big[..., 0], big[..., 2])
    # Constant images stay constant under an antialiased resize.
    np.testing.assert_array_equal(big[:, 3, 5, 1], np.arange(10) * 20)


def test_idx_truncated_and_bad_magic(tmp_path):
    raw = struct.pack(">IIII", 0x803, 5, 4, 4) + bytes(3 * 16)  # header promises 5 images, 3 follow
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw)
    with pytest.raises(DataError) as err:
        data.load_images("mnist", str(tmp_path))
    assert_one_sentence_naming(err, tmp_path / "train-images-idx3-ubyte")

    (tmp_path / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x801, 1, 4, 4) + bytes(16))
    with pytest.raises(DataError) as err:
        data.load_images("fashion_mnist", str(tmp_path))
    assert_one_sentence_naming(err, tmp_path / "train-images-idx3-ubyte")


def test_idx_truncated_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, id_images(50, size=28))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError) as err:
        data.load_images("mnist", str(tmp_path))
    assert_one_sentence_naming(err, path)


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "cifar10", "folder"])
def test_missing_dir(tmp_path, name):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        data.load_images(name, str(missing))
    assert_one_sentence_naming(err, missing)


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "cifar10", "folder"])
def test_dir_without_data(tmp_path, name):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError) as err:
        data.make_dataset(name, str(tmp_path))
    assert_one_sentence_naming(err, tmp_path)


def test_bad_arguments(idx_dir):
    with pytest.raises(DataError, match="channels"):
        data.load_images("mnist", idx_dir, channels=2)
    with pytest.raises(DataError, match="celeba"):
        data.load_images("celeba", idx_dir)
    with pytest.raises(DataError, match="--data_dir"):
        data.make_dataset("folder")
    with pytest.raises(DataError, match="batch_size"):
        data.make_dataset("mnist", idx_dir, image_size=4, batch_size=11)


# ---------------------------------------------------------------------------------------------- offline fallbacks

@pytest.mark.parametrize("name", ["mnist", "cifar10", "fashion_mnist"])
def test_download_failure_is_data_error(monkeypatch, tmp_path, name):
    import keras

    def offline():
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    # Hide the Debian copy and any Keras cache so the download path is reached.
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(getattr(keras.datasets, name), "load_data", offline)
    with pytest.raises(DataError) as err:
        data.load_images(name)
    message = str(err.value)
    assert "--data_dir" in message and "\n" not in message
    if name == "fashion_mnist":
        assert "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_from_keras_cache(monkeypatch, tmp_path):
    cache = tmp_path / "keras" / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    write_idx(cache / "train-images-idx3-ubyte.gz", id_images(10))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    np.testing.assert_array_equal(data.load_images("fashion_mnist", image_size=4)[..., 0], id_images(10))


@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    train = data.load_images("fashion_mnist", image_size=32)
    test = data.load_images("fashion_mnist", image_size=28, split="test")
    assert train.shape == (60000, 32, 32, 1) and train.dtype == np.uint8
    assert test.shape == (10000, 28, 28, 1)
    # Clothing on a black background: dark corners, bright and varied middles.
    assert train[:, 0, 0].mean() < 5 and train.max() == 255 and 50 < train.mean() < 100


# ---------------------------------------------------------------------------------------------- CIFAR-10

def test_cifar_folder_parent_and_tarball(cifar_dir):
    from_parent = data.load_images("cifar10", str(cifar_dir), channels=3)
    from_folder = data.load_images("cifar10", str(cifar_dir / "cifar-10-batches-py"), channels=3)
    archive = cifar_dir / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    tar_only = cifar_dir / "tar_only"
    tar_only.mkdir()
    os.replace(archive, tar_only / archive.name)
    from_tar = data.load_images("cifar10", str(tar_only), channels=3)

    assert from_parent.shape == (10, 32, 32, 3) and from_parent.dtype == np.uint8
    np.testing.assert_array_equal(from_parent, from_folder)
    np.testing.assert_array_equal(from_parent, from_tar)
    # Channel-major storage became HWC, batches in order 1..5.
    np.testing.assert_array_equal(from_parent[:, 7, 9, 0], [10, 11, 20, 21, 30, 31, 40, 41, 50, 51])
    assert (from_parent[..., 1] == 100).all() and (from_parent[..., 2] == 200).all()
    assert data.load_images("cifar10", str(cifar_dir), channels=3, split="test").shape == (3, 32, 32, 3)


def test_cifar_rgb_to_gray(cifar_dir):
    gray = data.load_images("cifar10", str(cifar_dir), channels=1, image_size=16)
    assert gray.shape == (10, 16, 16, 1)
    red = np.array([10, 11, 20, 21, 30, 31, 40, 41, 50, 51])
    expected = np.round(0.2989 * red + 0.5870 * 100 + 0.1140 * 200)
    np.testing.assert_array_equal(gray[:, 5, 5, 0], expected)


def test_cifar_batches_as_released_and_their_labels(cifar_dir):
    raw = (cifar_dir / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"_codecs" not in raw
    images = data.load_images("cifar10", str(cifar_dir), channels=3)
    labels = data.read_cifar10_labels(str(cifar_dir))
    assert labels.dtype == np.uint8 and labels.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    np.testing.assert_array_equal(labels, images[:, 0, 0, 0] % 10)  # the images' own order
    assert data.read_cifar10_labels(str(cifar_dir), "test").tolist() == [0, 1, 2]
    archive = cifar_dir / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    np.testing.assert_array_equal(data.read_cifar10_labels(str(archive)), labels)


class Runs:
    """Unpickling it calls `call`(*args), which would create a marker file."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("call", ["os.system", "builtins.eval", "numpy.frombuffer"])
def test_cifar_pickle_naming_any_other_global_is_refused_unrun(cifar_dir, call):
    marker = cifar_dir / "ran"
    payload = {"os.system": Runs(os.system, f"touch {marker}"),
               "builtins.eval": Runs(eval, f"open({str(marker)!r}, 'w').close()"),
               "numpy.frombuffer": Runs(np.frombuffer, b"ran")}[call]
    path = cifar_dir / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(release_pickle({b"data": payload, b"labels": [0]}))
    for read in (data.load_images, data.read_cifar10_labels):
        with pytest.raises(DataError) as err:
            read("cifar10", str(cifar_dir)) if read is data.load_images else read(str(cifar_dir))
        assert not marker.exists()  # nothing it names was called
        assert_one_sentence_naming(err, path)
        assert "not a CIFAR-10 batch" in str(err.value)


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_cifar_archive_member_that_is_no_regular_file(cifar_dir, kind):
    archive = cifar_dir / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ["data_batch_1", "data_batch_2", "data_batch_4", "data_batch_5", "test_batch"]:
            tar.add(cifar_dir / "cifar-10-batches-py" / name, arcname=f"cifar-10-batches-py/{name}")
        member = tarfile.TarInfo("cifar-10-batches-py/data_batch_3")
        member.type = tarfile.DIRTYPE if kind == "directory" else tarfile.SYMTYPE
        member.linkname = "data_batch_1"
        tar.addfile(member)
    with pytest.raises(DataError) as err:
        data.load_images("cifar10", str(archive))
    assert_one_sentence_naming(err, f"{archive}:cifar-10-batches-py/data_batch_3")
    assert "not a regular file" in str(err.value)


def test_cifar_truncated_pickle(cifar_dir):
    path = cifar_dir / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError) as err:
        data.load_images("cifar10", str(cifar_dir))
    assert_one_sentence_naming(err, path)


# ---------------------------------------------------------------------------------------------- --fit pad

@pytest.fixture
def idx28_dir(tmp_path):
    """(a --data_dir of 6 train images of 28x28 like (Fashion-)MNIST's, those images): no pixel is 0, so a black
    border can only come from the padding."""
    images = np.random.default_rng(4).integers(1, 256, (6, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    return str(tmp_path), images


def as_set(images):
    return sorted(image.tobytes() for image in images)


def test_pad_centres_the_originals_on_black(idx28_dir):
    folder, originals = idx28_dir
    padded = data.load_images("mnist", folder, 32, fit="pad")
    np.testing.assert_array_equal(padded, np.pad(originals, ((0, 0), (2, 2), (2, 2)))[..., None])
    np.testing.assert_array_equal(data.load_images("mnist", folder, 32, channels=3, fit="pad"),
                                  np.repeat(padded, 3, axis=-1))  # gray -> RGB still applies
    # 28 -> 31: the odd pixel goes to the bottom and the right.
    np.testing.assert_array_equal(data.load_images("mnist", folder, 31, fit="pad")[..., 0],
                                  np.pad(originals, ((0, 0), (1, 2), (1, 2))))
    np.testing.assert_array_equal(data.load_images("mnist", folder, 28, fit="pad")[..., 0], originals)
    # The pipeline, right after a resize pipeline of the same files (kept in memory): the padded images, in [-1, 1].
    take(data.make_dataset("mnist", folder, 32, batch_size=6), 1)
    [batch] = take(data.make_dataset("mnist", folder, 32, batch_size=6, fit="pad"), 1)
    assert as_set(data.to_uint8(batch)) == as_set(padded)  # one epoch of 6: every image once
    assert (batch[:, :2] == -1).all() and (batch[:, :, -2:] == -1).all()


def test_resize_is_unchanged_by_the_fit_flag(idx28_dir):
    folder, originals = idx28_dir
    # What data.py has always done: a plain bilinear upscale, rounded.
    expected = tf.image.resize(originals[..., None].astype(np.float32), [32, 32], method="bilinear")
    expected = np.round(np.clip(expected.numpy(), 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(data.load_images("mnist", folder, 32), expected)
    np.testing.assert_array_equal(data.load_images("mnist", folder, 32, fit="resize"), expected)
    take(data.make_dataset("mnist", folder, 32, batch_size=6, fit="pad"), 1)
    [batch] = take(data.make_dataset("mnist", folder, 32, batch_size=6), 1)
    assert as_set(data.to_uint8(batch)) == as_set(expected)


def test_pad_at_cifars_own_size_is_resize(cifar_dir):
    np.testing.assert_array_equal(data.load_images("cifar10", str(cifar_dir), channels=3, fit="pad"),
                                  data.load_images("cifar10", str(cifar_dir), channels=3))


def test_pad_where_it_means_nothing_is_one_sentence(idx28_dir, image_tree):
    with pytest.raises(DataError) as err:
        data.make_dataset("fashion_mnist", idx28_dir[0], image_size=16, batch_size=2, fit="pad")
    assert str(err.value) == ("--fit pad needs images no larger than --image_size: fashion_mnist is 28x28, "
                              "--image_size is 16; use --fit resize.")
    for call in (data.make_dataset, data.load_images):
        with pytest.raises(DataError) as err:
            call("folder", str(image_tree), image_size=16, fit="pad")
        assert str(err.value).startswith("--fit pad is for the built-in datasets") and "\n" not in str(err.value)
    with pytest.raises(DataError, match="fit must be one of resize, pad"):
        data.load_images("mnist", idx28_dir[0], fit="crop")


# ---------------------------------------------------------------------------------------------- folders

@pytest.fixture
def image_tree(tmp_path):
    """Six 8x8 solid-colour images in nested folders, mixed extensions and cases, plus a non-image file."""
    root = tmp_path / "images"
    colours = {"a/1.png": (255, 0, 0), "a/2.PNG": (0, 255, 0), "b/c/3.png": (0, 0, 255),
               "b/4.png": (10, 20, 30), "5.png": (200, 100, 50), "6.png": (60, 60, 60)}
    for name, colour in colours.items():
        save_png(str(root / name), np.full((8, 8, 3), colour))
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(root / "b" / "7.JPG", quality=95)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_order_colours_and_channels(image_tree):
    rgb = data.load_images("folder", str(image_tree), image_size=4, channels=3)
    assert rgb.shape == (7, 4, 4, 3) and rgb.dtype == np.uint8
    # Sorted full paths: 5.png, 6.png, a/1.png, a/2.PNG, b/4.png, b/7.JPG, b/c/3.png.
    expected = [(200, 100, 50), (60, 60, 60), (255, 0, 0), (0, 255, 0), (10, 20, 30), None, (0, 0, 255)]
    for image, colour in zip(rgb, expected):
        if colour is None:  # the JPEG: lossy, so only roughly grey
            assert np.abs(image.astype(int) - 128).max() <= 3
        else:
            assert (image == colour).all()
    gray = data.load_images("folder", str(image_tree), image_size=4, channels=1)
    assert gray.shape == (7, 4, 4, 1)
    assert gray[2, 0, 0, 0] == round(0.2989 * 255) and gray[1, 0, 0, 0] == 60
    assert data.load_images("folder", str(image_tree), image_size=4, limit=3).shape == (3, 4, 4, 1)


def test_folder_gray_source_to_rgb(tmp_path):
    save_png(str(tmp_path / "g.png"), np.full((6, 6), 77))
    rgb = data.load_images("folder", str(tmp_path), image_size=6, channels=3)
    assert (rgb == 77).all() and rgb.shape == (1, 6, 6, 3)


def test_folder_centre_crop(tmp_path):
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, :10], wide[:, 10:20], wide[:, 20:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    save_png(str(tmp_path / "wide.png"), wide)
    save_png(str(tmp_path / "tall.png"), wide.transpose(1, 0, 2))
    tall, wide_out = data.load_images("folder", str(tmp_path), image_size=5, channels=3)
    assert (wide_out == (0, 255, 0)).all() and (tall == (0, 255, 0)).all()


@pytest.mark.parametrize("damage", ["garbage", "truncated_png", "truncated_jpeg"])
def test_folder_bad_file(image_tree, damage):
    if damage == "garbage":
        bad = image_tree / "b" / "bad.png"
        bad.write_bytes(b"this is not a png at all")
    elif damage == "truncated_png":
        bad = image_tree / "a" / "big.png"
        save_png(str(bad), np.random.default_rng(0).integers(0, 256, (64, 64, 3)))
        bad.write_bytes(bad.read_bytes()[:3000])
    else:
        bad = image_tree / "big.jpeg"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:2000])
    with pytest.raises(DataError) as err:
        data.make_dataset("folder", str(image_tree), image_size=4, batch_size=2)
    assert_one_sentence_naming(err, bad)


def test_folder_dataset_matches_load_images_and_resumes(image_tree):
    loaded = data.load_images("folder", str(image_tree), image_size=4, channels=3)
    ds = data.make_dataset("folder", str(image_tree), image_size=4, channels=3, batch_size=2, seed=3)
    assert ds.element_spec.shape == (2, 4, 4, 3)
    batches = take(ds, 6)  # 3 batches per epoch, one image sits out each epoch
    expected = loaded.astype(np.float32) / 127.5 - 1.0
    for epoch in (batches[:3], batches[3:]):
        images = np.concatenate(epoch)
        rows = [int(np.argmin(np.abs(expected - image).reshape(7, -1).max(1))) for image in images]
        np.testing.assert_array_equal(images, expected[rows])  # decoded lazily == loaded up front, bit for bit
        assert len(set(rows)) == 6
    resumed = take(data.make_dataset("folder", str(image_tree), image_size=4, channels=3, batch_size=2,
                                     seed=3, start_batch=2), 4)
    np.testing.assert_array_equal(np.stack(resumed), np.stack(batches[2:]))


def png_modes(folder):
    """One 2x2 PNG per mode that decode_png at uint8 gets wrong -> {file: (its 4 pixels as RGB, as gray)}.

    Alpha is composited on black: c * alpha / 255, rounded. Gray is 0.2989 R + 0.5870 G + 0.1140 B of the composite,
    rounded; gray sources stay as they are.
    """
    rgba = np.array([[[200, 100, 50, 0], [200, 100, 50, 255]], [[200, 100, 50, 128], [10, 250, 90, 64]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(folder / "p.png")
    palette.save(folder / "p_transparent.png", transparency=1)  # colour 1 fully transparent
    palette.save(folder / "p_alpha.png", transparency=bytes([255, 0, 128]))  # alpha per colour
    Image.fromarray(np.array([[0, 65535], [32768, 511]], np.uint16)).save(folder / "i16.png")
    la = np.array([[[100, 0], [100, 255]], [[200, 128], [50, 255]]], np.uint8)
    Image.fromarray(la, "LA").save(folder / "la.png")
    red, green, blue, black = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)
    return {
        # 124.18 = gray of (200, 100, 50); at alpha 128: (100.4, 50.2, 25.1) and 62.3; (10, 250, 90) at 64: 40.2
        "rgba.png": ([black, (200, 100, 50), (100, 50, 25), (3, 63, 23)], [0, 124, 62, 40]),
        "p.png": ([red, green, blue, green], [76, 150, 29, 150]),
        "p_transparent.png": ([red, black, blue, black], [76, 0, 29, 0]),
        "p_alpha.png": ([red, black, (0, 0, 128), black], [76, 0, 15, 0]),
        # v * 255 / 65535: 32768 -> 127.5, 511 -> 1.99 (dropping the low byte would give 1)
        "i16.png": ([(0, 0, 0), (255, 255, 255), (128, 128, 128), (2, 2, 2)], [0, 255, 128, 2]),
        "la.png": ([(0, 0, 0), (100, 100, 100), (100, 100, 100), (50, 50, 50)], [0, 100, 100, 50]),  # 200 * 128/255
    }


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_png_modes(tmp_path, channels):
    expected = png_modes(tmp_path)
    assert {Image.open(tmp_path / f).mode for f in expected} == {"RGBA", "P", "I;16", "LA"}
    images = data.load_images("folder", str(tmp_path), image_size=2, channels=channels)
    for name, image in zip(sorted(expected), images):
        rgb, gray = expected[name]
        want = np.array(rgb if channels == 3 else gray).reshape(4, channels)
        np.testing.assert_array_equal(image.reshape(4, channels), want, err_msg=name)


# ---------------------------------------------------------------------------------------------- folder cache

def graph_ops(ds):
    """The op types in a dataset's graph, its functions' bodies included."""
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


def caches(folder):
    """The cache directories (complete or not) under a folder's .gan-cache."""
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("budget_gb", [None, 0])  # in memory, and read from the cache's files one image each
def test_folder_cache_built_once_reused_and_rebuilt_when_the_folder_changes(image_tree, monkeypatch, budget_gb):
    if budget_gb is not None:
        monkeypatch.setenv("GAN_DATA_MEMORY_GB", str(budget_gb))
    uncached = data.load_images("folder", str(image_tree), image_size=4, channels=3)  # decodes every file

    def dataset(**kw):
        return data.make_dataset("folder", str(image_tree), image_size=4, channels=3, batch_size=2, seed=3, **kw)

    ds = dataset()
    first = np.stack(take(ds, 9))  # 3 epochs of 3 batches
    # Once built, the pipeline decodes nothing (no decoder op at all) and runs no Python.
    assert not graph_ops(ds) & {"DecodePng", "DecodeJpeg", "DecodeImage", "EagerPyFunc", "PyFunc", "PyFuncStateless"}
    assert "EagerPyFunc" in graph_ops(tf.data.Dataset.range(1).map(lambda x: tf.py_function(abs, [x], tf.int64)))
    cache_root = image_tree / folders.CACHE_DIR_NAME
    [cache] = caches(cache_root)
    assert cache.endswith("-1" if budget_gb == 0 else f"-{folders.PACK}")  # one image per file only when read from disk
    # The pixels are the uncached decoder's, bit for bit: every batch is made of uncached images.
    expected = uncached.astype(np.float32) / 127.5 - 1.0
    for image in first.reshape(-1, 4, 4, 3):
        assert np.any(np.all(expected == image, axis=(1, 2, 3)))

    # A later run (a fresh process: nothing kept in memory) reads the cache and decodes nothing: with the decoder
    # broken, and a file's content destroyed behind the listing check's back (same size, same mtime), it still
    # yields the same batches, and resumes and slices them as before.
    data._memo.clear()
    victim = image_tree / "a" / "1.png"
    stat = victim.stat()
    victim.write_bytes(bytes(stat.st_size))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    real_decode_file = folders._decode_file
    monkeypatch.setattr(folders, "_decode_file", lambda *a: pytest.fail("a cached folder was decoded"))
    np.testing.assert_array_equal(np.stack(take(dataset(), 9)), first)
    np.testing.assert_array_equal(np.stack(take(dataset(start_batch=4), 5)), first[4:])
    halves = take(dataset(start_batch=1, parts=2, take=[1]), 4)
    np.testing.assert_array_equal(np.stack(halves), first[1:5, 1:])
    monkeypatch.setattr(folders, "_decode_file", real_decode_file)

    # A changed folder (a file rewritten, so its mtime moves; a file added) is decoded again into a new cache,
    # which replaces the old one.
    save_png(str(victim), np.full((8, 8, 3), (1, 2, 3)))
    save_png(str(image_tree / "8.png"), np.full((8, 8, 3), (9, 9, 9)))
    changed = np.concatenate(take(dataset(), 8)).reshape(-1, 4 * 4 * 3)  # 4 batches of 2 per epoch: 8 of 8 images
    colours = {tuple(np.round((row[:3] + 1.0) * 127.5).astype(int)) for row in changed}
    assert {(1, 2, 3), (9, 9, 9)} <= colours and (255, 0, 0) not in colours
    [new_cache] = caches(cache_root)
    assert new_cache != cache


def test_builtin_dataset_kept_between_calls_until_its_files_change(idx_dir, monkeypatch):
    first = take(data.make_dataset("mnist", idx_dir, image_size=8, batch_size=5), 2)
    # Kept: a second pipeline (a benchmark's next row) neither reads nor resizes the files again.
    monkeypatch.setattr(data, "load_images", lambda *a, **k: pytest.fail("loaded again"))
    np.testing.assert_array_equal(np.stack(take(data.make_dataset("mnist", idx_dir, image_size=8, batch_size=5), 2)),
                                  np.stack(first))
    monkeypatch.undo()
    write_idx(os.path.join(idx_dir, "train-images-idx3-ubyte.gz"), id_images(10) + 5)  # new content, size, mtime
    changed = take(data.make_dataset("mnist", idx_dir, image_size=8, batch_size=5), 2)
    # The same order (same seed, same count), every pixel 5 brighter.
    np.testing.assert_array_equal(data.to_uint8(np.stack(changed)), data.to_uint8(np.stack(first)) + 5)


def test_folder_cache_under_gan_cache_and_in_the_users_cache(image_tree, tmp_path, monkeypatch):
    def batches():
        data._memo.clear()
        return np.stack(take(data.make_dataset("folder", str(image_tree), image_size=4, channels=3, batch_size=2), 4))

    monkeypatch.setenv("GAN_CACHE", str(tmp_path / "gan_cache"))
    reference = batches()
    assert len(caches(tmp_path / "gan_cache" / "folders")) == 1 and not (image_tree / folders.CACHE_DIR_NAME).exists()
    # Without $GAN_CACHE, and with no way to write next to the data (a file where the cache folder would go): the
    # user's cache folder. Nothing else changes.
    monkeypatch.delenv("GAN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (image_tree / folders.CACHE_DIR_NAME).write_text("in the way")
    np.testing.assert_array_equal(batches(), reference)
    assert len(caches(tmp_path / "home" / ".cache" / "tf-gans" / "folders")) == 1


def test_folder_with_nowhere_to_cache(image_tree, tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("GAN_CACHE", str(blocked))  # $GAN_CACHE/folders cannot be made
    batches = take(data.make_dataset("folder", str(image_tree), image_size=4, channels=3, batch_size=2), 3)
    assert len(batches) == 3 and "later runs decode again" in capsys.readouterr().err  # decoded into memory
    monkeypatch.setenv("GAN_DATA_MEMORY_GB", "0")  # too large for memory, and no cache: refused in one sentence
    with pytest.raises(DataError) as err:
        data.make_dataset("folder", str(image_tree), image_size=4, channels=3, batch_size=2)
    assert_one_sentence_naming(err, image_tree)
    assert "$GAN_CACHE" in str(err.value)


def test_folder_cache_two_runs_at_once(image_tree, monkeypatch):
    # Run A decodes into its temporary folder while run B builds and publishes the same cache: A's rename then
    # fails, A uses B's cache, and no temporary folder is left behind.
    real_temp_dir = folders._temp_dir
    others = []

    def temp_dir_racing(stack, roots, name):
        tmp = real_temp_dir(stack, roots, name)
        if not others:
            others.append(1)
            data._memo.clear()
            others.append(np.stack(take(data.make_dataset("folder", str(image_tree), image_size=4, channels=3,
                                                          batch_size=2), 4)))
        return tmp

    monkeypatch.setattr(folders, "_temp_dir", temp_dir_racing)
    mine = np.stack(take(data.make_dataset("folder", str(image_tree), image_size=4, channels=3, batch_size=2), 4))
    np.testing.assert_array_equal(mine, others[1])
    assert len(caches(image_tree / folders.CACHE_DIR_NAME)) == 1  # B's; A's temporary folder is gone


# ---------------------------------------------------------------------------------------------- damaged folders

def bad_scan_jpeg(path):
    """A JPEG whose headers and end marker are fine but whose scan data is garbage: passes the cheap check."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(path, format="JPEG", quality=90)
    raw = bytearray(path.read_bytes())
    sos = raw.index(b"\xff\xda")
    scan = sos + 2 + struct.unpack(">H", raw[sos + 2:sos + 4])[0]
    raw[scan + 10:-2] = rng.integers(0, 256, len(raw) - 2 - scan - 10, np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def bad_zlib_png(path):
    """A PNG whose compressed pixel data is damaged but whose chunk CRCs are right: passes the cheap check."""
    save_png(str(path), np.random.default_rng(2).integers(0, 256, (32, 32, 3)))
    raw = bytearray(path.read_bytes())
    idat = raw.index(b"IDAT")
    length = struct.unpack(">I", raw[idat - 4:idat])[0]
    raw[idat + 24:idat + 64] = bytes(40)
    raw[idat + 4 + length:idat + 8 + length] = struct.pack(">I", zlib.crc32(raw[idat:idat + 4 + length]))
    path.write_bytes(bytes(raw))


GOOD = 298  # + 3 damaged files = 301, so the damaged ones are 0.997%: just under the 1% a run may skip
SCAN, ZLIB, CUT = "050_scan.jpg", "120_zlib.png", "200_cut.png"  # sorted between 050.png/051.png, 120/121, 200/201


@pytest.fixture
def damaged_tree(tmp_path, monkeypatch):
    """GOOD 8x8 PNGs 000.png ... whose pixels (k % 256, k // 256, 7) name them, plus three damaged files: two that
    only a full decode finds (SCAN, ZLIB) and a truncated PNG that the cheap check finds (CUT)."""
    monkeypatch.setattr(folders, "_warned", set())  # warnings are once per process; each test starts afresh
    root = tmp_path / "damaged"
    for k in range(GOOD):
        save_png(str(root / f"{k:03d}.png"), np.broadcast_to([k % 256, k // 256, 7], (8, 8, 3)))
    bad_scan_jpeg(root / SCAN)
    bad_zlib_png(root / ZLIB)
    save_png(str(root / CUT), np.random.default_rng(3).integers(0, 256, (32, 32, 3)))
    (root / CUT).write_bytes((root / CUT).read_bytes()[:1000])
    for name in (SCAN, ZLIB):  # the premise: only a full decode tells these two apart from good files
        assert folders._image_problem(str(root / name)) is None
        with pytest.raises(tf.errors.InvalidArgumentError):
            folders._decode_file(str(root / name), 8, 3)
    assert folders._image_problem(str(root / CUT)) is not None
    return root


def names(batch):
    """Float [-1, 1] batch of damaged_tree images -> their numbers."""
    pixels = np.round((batch[:, 0, 0] + 1.0) * 127.5).astype(int)
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def test_damaged_files_are_left_out_up_front(damaged_tree, capsys, monkeypatch):
    def dataset(**kw):
        return data.make_dataset("folder", str(damaged_tree), image_size=8, channels=3, batch_size=20, seed=4, **kw)

    batches = take(dataset(), 16)  # 14 batches per epoch of 298
    for epoch in (batches[:14], batches[14:]):
        numbers = sum((names(b) for b in epoch), [])
        assert len(set(numbers)) == len(numbers) and set(numbers) <= set(range(GOOD))
    np.testing.assert_array_equal(np.stack(take(dataset(), 16)), np.stack(batches))  # a second run
    np.testing.assert_array_equal(np.stack(take(dataset(start_batch=13), 3)), np.stack(batches[13:]))  # resume
    assert len(data.load_images("folder", str(damaged_tree), image_size=8, channels=3)) == GOOD
    warnings = capsys.readouterr().err.splitlines()
    for name in (SCAN, ZLIB, CUT):  # each named once, though three datasets and load_images met them
        assert sum(str(damaged_tree / name) in line for line in warnings) == 1, warnings
    monkeypatch.setattr(folders, "_warned", set())  # a new process: its run finds the cache, and warns again
    data._memo.clear()
    np.testing.assert_array_equal(np.stack(take(dataset(), 16)), np.stack(batches))
    warnings = capsys.readouterr().err.splitlines()
    assert sorted(line.split()[5].rstrip(":") for line in warnings if "damaged" in line) == \
        [str(damaged_tree / name) for name in sorted((SCAN, ZLIB, CUT))], warnings


def test_damaged_files_found_in_the_pipeline_are_replaced(damaged_tree, tmp_path, monkeypatch, capsys):
    # A folder too large to decode up front: SCAN and ZLIB pass the cheap check and fail only inside the pipeline.
    # (The up-front sample is every 30th of the 300 files that pass, sorted positions 0, 30, ...: not 51 or 122.)
    monkeypatch.setattr(folders, "FULL_DECODE_MAX_FILES", 0)
    monkeypatch.setattr(folders, "DECODE_SAMPLE", 10)
    # The same folder with each of them replaced by a copy of the next file in sorted order, and CUT deleted.
    twin = tmp_path / "twin"
    shutil.copytree(damaged_tree, twin)
    (twin / SCAN).write_bytes((twin / "051.png").read_bytes())
    (twin / ZLIB).write_bytes((twin / "121.png").read_bytes())
    (twin / CUT).unlink()

    def dataset(root, **kw):
        return data.make_dataset("folder", str(root), image_size=8, channels=3, batch_size=20, seed=4, **kw)

    batches = take(dataset(damaged_tree), 17)  # 15 batches per epoch of 300: every file is drawn in each epoch
    np.testing.assert_array_equal(np.stack(batches), np.stack(take(dataset(twin), 17)))
    np.testing.assert_array_equal(np.stack(take(dataset(damaged_tree, start_batch=14), 3)), np.stack(batches[14:]))
    halves = take(dataset(damaged_tree, parts=2), 34)  # replicas see the same global batches
    np.testing.assert_array_equal(np.stack(batches), np.stack([np.concatenate(halves[i:i + 2])
                                                                for i in range(0, 34, 2)]))
    warnings = capsys.readouterr().err.splitlines()
    for name, stand_in in ((SCAN, "051.png"), (ZLIB, "121.png"), (CUT, None)):
        named = [line for line in warnings if str(damaged_tree / name) in line]
        assert len(named) == 1, warnings
        assert stand_in is None or str(damaged_tree / stand_in) in named[0]


def test_folder_with_over_one_percent_damaged_is_refused(damaged_tree):
    bad_zlib_png(damaged_tree / "299_zlib.png")  # 4 of 302
    with pytest.raises(DataError) as err:
        data.make_dataset("folder", str(damaged_tree), image_size=8, batch_size=20)
    assert_one_sentence_naming(err, damaged_tree)
    assert "4 of the 302 image files" in str(err.value)
    with pytest.raises(DataError, match="4 of the 302"):
        data.load_images("folder", str(damaged_tree), image_size=8)


def test_large_folder_with_over_one_percent_damaged_in_its_sample_is_refused(damaged_tree, monkeypatch):
    monkeypatch.setattr(folders, "FULL_DECODE_MAX_FILES", 0)
    monkeypatch.setattr(folders, "DECODE_SAMPLE", 100)  # every 3rd of the 300 files that pass the cheap check
    data.make_dataset("folder", str(damaged_tree), image_size=8, batch_size=20)  # 1 of 100: SCAN, position 51
    for k in (0, 3, 6):  # sorted positions 0, 3, 6 are sampled too
        bad_zlib_png(damaged_tree / f"{k:03d}.png")
    with pytest.raises(DataError) as err:
        data.make_dataset("folder", str(damaged_tree), image_size=8, batch_size=20)
    assert_one_sentence_naming(err, damaged_tree / "000.png")
    assert "4 of the 100 sampled image files" in str(err.value)


# ---------------------------------------------------------------------------------------------- data order

def test_batches_full_static_and_in_range(idx_dir):
    ds = data.make_dataset("mnist", idx_dir, image_size=8, channels=3, batch_size=3)
    assert ds.element_spec == tf.TensorSpec([3, 8, 8, 3], tf.float32)
    traces = []

    @tf.function
    def step(x):
        traces.append(1)
        return tf.reduce_sum(x)

    for batch in ds.take(8):  # 3 per epoch: crosses two epoch boundaries
        assert batch.shape == (3, 8, 8, 3) and batch.dtype == tf.float32
        assert -1.0 <= batch.numpy().min() and batch.numpy().max() <= 1.0
        step(batch)
    assert len(traces) == 1


def test_each_epoch_is_a_permutation(idx_dir):
    batches = take(data.make_dataset("mnist", idx_dir, image_size=4, batch_size=5, seed=1), 8)
    epochs = [sum((ids(b) for b in batches[i:i + 2]), []) for i in range(0, 8, 2)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(10))
    assert len({tuple(e) for e in epochs}) > 1  # a fresh order each epoch

    # 10 images in batches of 4: each epoch uses 8 distinct images, never a short batch.
    batches = take(data.make_dataset("mnist", idx_dir, image_size=4, batch_size=4, seed=1), 6)
    for i in range(0, 6, 2):
        epoch = ids(batches[i]) + ids(batches[i + 1])
        assert len(set(epoch)) == 8


def test_seed_determines_order(idx_dir):
    def order(seed):
        return [ids(b) for b in take(data.make_dataset("mnist", idx_dir, image_size=4, batch_size=5, seed=seed), 4)]

    assert order(7) == order(7)
    assert order(7) != order(8)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_start_batch_equals_skipping(idx_dir, k):
    # 10 images, batch 4 -> 2 batches per epoch; k spans mid-epoch starts and epoch boundaries.
    full = take(data.make_dataset("mnist", idx_dir, image_size=4, batch_size=4, seed=5), k + 4)
    resumed = take(data.make_dataset("mnist", idx_dir, image_size=4, batch_size=4, seed=5, start_batch=k), 4)
    np.testing.assert_array_equal(np.stack(resumed), np.stack(full[k:]))


# ---------------------------------------------------------------------------------------------- replica slices

@pytest.fixture
def noise_idx_dir(tmp_path):
    """20 distinct random 4x4 train images: 2 batches of 8 per epoch, 4 sit out."""
    write_idx(tmp_path / "train-images-idx3-ubyte", np.random.default_rng(0).integers(0, 256, (20, 4, 4)))
    return str(tmp_path)


@pytest.mark.parametrize("parts", [2, 4])
@pytest.mark.parametrize("start_batch", [0, 3])
def test_slices_reassemble_the_global_batches(noise_idx_dir, parts, start_batch):
    def dataset(**kw):
        return data.make_dataset("mnist", noise_idx_dir, image_size=4, batch_size=8, seed=2, start_batch=start_batch,
                                 **kw)

    whole = take(dataset(), 5)  # crosses two epoch boundaries
    sliced = dataset(parts=parts)
    assert sliced.element_spec.shape == (8 // parts, 4, 4, 1)
    pieces = take(sliced, 5 * parts)
    np.testing.assert_array_equal(np.stack(whole), np.stack([np.concatenate(pieces[i:i + parts])
                                                             for i in range(0, 5 * parts, parts)]))
    second_halves = take(dataset(parts=2, take=range(1, 2)), 5)
    np.testing.assert_array_equal(np.stack(second_halves), np.stack(whole)[:, 4:])
    last_quarters = take(dataset(parts=4, take=[3, 2]), 10)  # in index order, whatever order take lists them in
    np.testing.assert_array_equal(np.stack(last_quarters).reshape(5, 4, 4, 4, 1), np.stack(whole)[:, 4:])


def test_folder_slices(image_tree):
    # 7 images in batches of 4: the fourth file sits out each epoch, slices hold two images each.
    def dataset(**kw):
        return data.make_dataset("folder", str(image_tree), image_size=4, channels=3, batch_size=4, seed=1, **kw)

    whole = take(dataset(start_batch=1), 3)
    halves = take(dataset(start_batch=1, parts=2), 6)
    np.testing.assert_array_equal(np.stack(whole), np.stack([np.concatenate(halves[i:i + 2]) for i in (0, 2, 4)]))
    second = take(dataset(start_batch=1, parts=2, take=[1]), 3)
    np.testing.assert_array_equal(np.stack(second), np.stack(whole)[:, 2:])


def test_dequantize_spreads_each_pixel_over_its_bin_the_same_for_replicas_and_resumes(noise_idx_dir):
    # --dequantize: (v + u) / 128 - 1, u ~ U(0, 1), as the WGAN-GP authors' CIFAR-10 code feeds its critic.
    def dataset(**kw):
        return data.make_dataset("mnist", noise_idx_dir, image_size=4, batch_size=8, seed=2, **kw)

    plain, noisy = np.stack(take(dataset(), 6)), np.stack(take(dataset(dequantize=True), 6))
    pixels = np.round((plain + 1) * 127.5)  # the uint8 values the batches hold
    u = (noisy + 1) * 128 - pixels
    assert -1 <= noisy.min() and noisy.max() < 1
    assert u.min() >= -1e-4 and u.max() < 1 + 1e-4  # every value stays in its own pixel's bin
    assert 0.27 < u.std() < 0.31 and abs(u.mean() - 0.5) < 0.03  # uniform: std 1/sqrt(12) = 0.289
    assert not np.allclose(u[0], u[2])  # fresh noise per batch
    np.testing.assert_array_equal(np.stack(take(dataset(dequantize=True, start_batch=3), 3)), noisy[3:])
    halves = take(dataset(dequantize=True, start_batch=1, parts=2), 10)
    np.testing.assert_array_equal(np.stack([np.concatenate(halves[i:i + 2]) for i in range(0, 10, 2)]), noisy[1:])
    second = take(dataset(dequantize=True, parts=4, take=[3]), 6)
    np.testing.assert_array_equal(np.stack(second), noisy[:, 6:])


@pytest.mark.parametrize("parts,take_", [(3, None), (0, None), (2, [2]), (2, []), (2, [0.5])])
def test_bad_slices_refused(noise_idx_dir, parts, take_):
    with pytest.raises(DataError) as err:
        data.make_dataset("mnist", noise_idx_dir, image_size=4, batch_size=8, parts=parts, take=take_)
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


# ---------------------------------------------------------------------------------------------- image I/O

def test_to_uint8():
    x = np.array([-1.0, 0.0, 1.0, -3.0, 2.5, 0.5], np.float32)
    np.testing.assert_array_equal(data.to_uint8(x), [0, 128, 255, 0, 255, 191])
    assert data.to_uint8(tf.constant(x)).dtype == np.uint8


def test_image_grid_layout():
    images = np.stack([np.full((3, 2, 1), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = data.image_grid(images, rows=2, cols=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 2 + 2, 1) and grid.dtype == np.uint8
    for i in range(5):
        top, left = (i // 3) * 4, (i % 3) * 3
        assert (grid[top:top + 3, left:left + 2] == 10 * (i + 1)).all()
    assert (grid[3] == 0).all() and (grid[:, 2] == 0).all() and (grid[:, 5] == 0).all()  # padding
    assert (grid[4:7, 6:8] == 0).all()  # the sixth tile is blank
    np.testing.assert_array_equal(data.image_grid(np.concatenate([images, images]), 1, 2, pad=0),
                                  np.concatenate([images[0], images[1]], axis=1))


@pytest.mark.parametrize("shape,mode", [((5, 7, 1), "L"), ((5, 7), "L"), ((5, 7, 3), "RGB")])
def test_save_image_round_trip(tmp_path, shape, mode):
    array = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
    path = tmp_path / "new" / "dir" / "img.png"
    data.save_image(array, str(path))
    data.save_image(array, str(path))  # overwriting works
    with Image.open(path) as image:
        assert image.mode == mode
        np.testing.assert_array_equal(np.asarray(image), array.reshape(5, 7, -1).squeeze())
    assert os.listdir(path.parent) == ["img.png"]  # no temporary files left behind

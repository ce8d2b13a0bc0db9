"""Tests for folders.py on hostile and broken image folders: symlink loops, dangling links, files that are not
regular files, decompression bombs, damaged cache metadata."""
import json
import os
import struct
import sys
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import folders  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Caches next to the data, in memory when small; warnings and the in-memory dataset as in a new process."""
    monkeypatch.delenv("GAN_CACHE", raising=False)
    monkeypatch.delenv("GAN_DATA_MEMORY_GB", raising=False)
    monkeypatch.setattr(folders, "_warned", set())
    data._memo.clear()


def save_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def numbered_pngs(root, n):
    """n 8x8 RGB PNGs 000.png ... under root whose pixels (k, 0, 7) name them."""
    for k in range(n):
        save_png(str(root / f"{k:03d}.png"), np.broadcast_to([k, 0, 7], (8, 8, 3)))


def within(seconds, call):
    """call()'s result, or a test failure if it has not returned after `seconds` (it goes on in the background)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"still running after {seconds} s"
    return result[0]


# ---------------------------------------------------------------------------------------------- the walk

def test_each_folder_is_walked_once_through_any_number_of_links(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "elsewhere"
    save_png(str(root / "1.png"), np.zeros((8, 8)))
    save_png(str(root / "a" / "2.png"), np.zeros((8, 8)))
    save_png(str(outside / "3.png"), np.zeros((8, 8)))
    os.symlink(".", root / "self")  # os.walk(followlinks=True) lists 1.png 41 times through this one
    os.symlink("..", root / "a" / "up")  # with a second loop it never finishes
    os.symlink(root / "a", root / "also_a")  # an alias of a folder already walked ("a" sorts first)
    os.symlink(outside, root / "linked")  # a category folder assembled by a link (LSUN) is followed
    expected = [str(root / "1.png"), str(root / "a" / "2.png"), str(root / "linked" / "3.png")]
    assert within(30, lambda: folders.list_images(str(root))) == expected
    assert len(data.load_images("folder", str(root), image_size=4)) == 3


def test_cmyk_and_grayscale_jpegs_decode_as_pillow_converts_them(tmp_path):
    Image.new("CMYK", (16, 16), (200, 30, 0, 40)).save(tmp_path / "cmyk.jpg", quality=95)
    Image.new("L", (16, 16), 90).save(tmp_path / "gray.jpg", quality=95)
    images = data.load_images("folder", str(tmp_path), image_size=4, channels=3)
    for image, name in zip(images, ["cmyk.jpg", "gray.jpg"]):
        with Image.open(tmp_path / name) as source:
            expected = np.asarray(source.convert("RGB"), int)[8, 8]
        assert np.abs(image.astype(int) - expected).max() <= 2, (name, image[0, 0], expected)


# ---------------------------------------------------------------------------------------------- damaged files

def png_bytes(width, height, rows=None):
    """An 8-bit grayscale PNG of width x height: its pixel rows are all 0, compressed as they stream (a 13,000 x
    13,000 decompression bomb is ~170 KB), or rows=b"" for a header-only file whose chunks are all sound."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    if rows is None:
        pack, row, rows = zlib.compressobj(9), bytes(width + 1), b""  # + 1: each row's filter byte
        rows = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def warned(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def test_a_dangling_link_is_a_damaged_file_and_training_goes_on(tmp_path, capsys):
    root = tmp_path / "images"
    numbered_pngs(root, 150)
    os.symlink(tmp_path / "gone.png", root / "150.png")
    batches = [b.numpy() for b in data.make_dataset("folder", str(root), image_size=8, channels=3,
                                                    batch_size=50).take(4)]
    numbers = np.round((np.concatenate(batches[:3])[:, 0, 0, 0] + 1) * 127.5).astype(int)
    assert sorted(numbers) == list(range(150))  # one epoch: every sound image once
    [warning] = warned(capsys)
    assert str(root / "150.png") in warning and "link to a missing file" in warning
    assert len(data.load_images("folder", str(root), image_size=8)) == 150


def test_a_file_that_is_no_regular_file_is_damaged_not_waited_on(tmp_path, capsys):
    root = tmp_path / "images"
    numbered_pngs(root, 150)
    os.mkfifo(root / "150.png")  # opening it for reading waits for a writer that never comes
    assert len(within(60, lambda: data.load_images("folder", str(root), image_size=8))) == 150
    [warning] = warned(capsys)
    assert str(root / "150.png") in warning and "not a regular file" in warning


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_damaged(tmp_path, capsys):
    root = tmp_path / "images"
    numbered_pngs(root, 150)
    (root / "000.png").chmod(0)
    assert len(data.load_images("folder", str(root), image_size=8)) == 149
    [warning] = warned(capsys)
    assert str(root / "000.png") in warning and "cannot be read" in warning


def test_images_above_the_pixel_limit_are_damaged_before_any_decode(tmp_path, capsys):
    root = tmp_path / "images"
    numbered_pngs(root, 200)
    (root / "bomb.png").write_bytes(png_bytes(13_000, 13_000))  # 169 Mpx: Pillow only warns
    (root / "huge.png").write_bytes(png_bytes(20_000, 20_000, rows=b""))  # 400 Mpx: Pillow raises
    assert len((root / "bomb.png").read_bytes()) < 500_000
    with pytest.warns(Image.DecompressionBombWarning):  # called alone, the check meets Pillow's warning
        assert "13000x13000 pixels" in folders._image_problem(str(root / "bomb.png"))
    assert "pixels" in folders._image_problem(str(root / "huge.png"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(data.load_images("folder", str(root), image_size=8)) == 200
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)], caught
    assert [line.split()[5] for line in warned(capsys)] == [f"{root / 'bomb.png'}:", f"{root / 'huge.png'}:"]


# ---------------------------------------------------------------------------------------------- the cache

def damage(cache, how):
    """Damage a built cache's metadata, or make it disagree with the cache's files."""
    meta_path = os.path.join(cache, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(cache) for name in names
                   if name.endswith(".u8"))
    if how == "missing_key":
        del meta["warnings"]
    elif how == "per_file_0":
        meta["per_file"] = 0
    elif how == "wrong_types":
        meta["shape"] = [str(meta["shape"][0])] + meta["shape"][1:]
    elif how == "count":  # one image fewer than the files hold: every file still has its size
        meta["shape"][0] -= 1
    elif how == "sizes":  # the same bytes in all, but one image's file holds two and the next one none
        with open(files[0], "ab") as f:
            f.write(open(files[1], "rb").read())
        open(files[1], "wb").close()
    if how == "not_json":
        with open(meta_path, "w") as f:
            f.write("{")
    else:
        with open(meta_path, "w") as f:
            json.dump(meta, f)


@pytest.mark.parametrize("how,budget_gb", [("missing_key", None), ("per_file_0", None), ("wrong_types", "0"),
                                           ("not_json", "0"), ("count", "0"), ("sizes", "0")])
def test_a_cache_with_damaged_metadata_is_rebuilt_not_trusted(tmp_path, monkeypatch, how, budget_gb):
    if budget_gb is not None:
        monkeypatch.setenv("GAN_DATA_MEMORY_GB", budget_gb)  # the cache's files are read as the pipeline runs
    root = tmp_path / "images"
    numbered_pngs(root, 7)

    def batches():
        data._memo.clear()  # a new process
        dataset = data.make_dataset("folder", str(root), image_size=8, channels=3, batch_size=2, seed=1)
        return np.stack([b.numpy() for b in dataset.take(6)])

    first = batches()
    [name] = os.listdir(root / folders.CACHE_DIR_NAME)
    cache = root / folders.CACHE_DIR_NAME / name
    with open(cache / "meta.json") as f:
        sound = json.load(f)
    damage(str(cache), how)
    np.testing.assert_array_equal(batches(), first)
    assert os.listdir(root / folders.CACHE_DIR_NAME) == [name]  # rebuilt in its place, nothing left beside it
    with open(cache / "meta.json") as f:
        assert json.load(f) == sound

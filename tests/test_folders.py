"""Tests for folders.py on hostile and broken image folders: symlink loops, dangling links, files that are not
regular files, decompression bombs, damaged cache metadata."""
import json
import os
import struct
import sys
import threading
import time
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

"""Shared fixtures: small generated datasets in the original file formats, so tests never need the internet."""
import gzip
import os
import struct
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "PYTEST_XDIST_WORKER" in os.environ:
    # pytest.ini runs two workers (pytest-xdist). TensorFlow gives each process one intra-op thread per core, so two
    # workers (and the scripts they start, which inherit this) would oversubscribe the cores: 174 s against 134 s for
    # the suite on 2 cores. Set before any test imports TensorFlow, which reads it once.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")


def cli_in_process(main, argv, capsys):
    """`python X.py ARGV` in this process, for a script X whose __main__ is common.cli(main) (each script's own line
    is run by one subprocess test): (exit status, stdout, stderr). A TensorFlow start-up cheaper per call."""
    import common
    try:
        common.cli(lambda: main([str(a) for a in argv]))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def write_idx_images(path, images):
    """images uint8 (N, rows, cols) -> an IDX3 file as in the original MNIST / Fashion-MNIST releases (.gz ok)."""
    header = struct.pack(">IIII", 0x00000803, *images.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_fashion(tmp_path_factory):
    """A Fashion-MNIST-format --data_dir with 96 train / 32 test images of 28x28 blobs, and labels (blob size)."""
    d = str(tmp_path_factory.mktemp("tiny_fashion"))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    for split, n in (("train", 96), ("t10k", 32)):
        cy, cx, r = rng.uniform(8, 20, n), rng.uniform(8, 20, n), rng.uniform(3, 8, n)
        blobs = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2 < r[:, None, None] ** 2) * 255
        write_idx_images(os.path.join(d, f"{split}-images-idx3-ubyte.gz"), blobs.astype(np.uint8))
        labels = np.minimum((r - 3) * 2, 9).astype(np.uint8)
        with gzip.open(os.path.join(d, f"{split}-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(struct.pack(">II", 0x00000801, n) + labels.tobytes())
    return d


@pytest.fixture(autouse=True)
def float32_policy():
    """main() sets Keras' global dtype policy from --precision; later tests must not inherit a mixed one."""
    yield
    import keras
    keras.mixed_precision.set_global_policy("float32")

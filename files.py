"""Writing files so that a crash, a full disk or a second writer never leaves half a file, and nobody else's file
is written through a planted name.

Every file the project writes (config.json, checkpoints' side files, sample grids, .npz and GIF outputs, caches,
CSVs, rewritten TensorBoard event files) goes through atomic_path: the content is written under a new temporary
name in the destination's own folder, random and created exclusively (so a symlink or file planted under a name
that could be guessed is never followed), flushed to disk, then renamed over the destination. A reader sees the
old file or the whole new one. Two writers of one destination each write their own temporary file; the last rename
wins. Files get the umask's mode, not mkstemp's 0600, which would survive the rename in a shared folder.
"""
import contextlib
import os
import secrets
import shutil


@contextlib.contextmanager
def atomic_path(path, suffix="", folder=False):
    """Yields a temporary path beside `path`, already created (an empty file, or with folder=True an empty
    directory) with a random name, that replaces `path` once the body has filled it and is removed if the body
    fails. `suffix` keeps an ending that a writer insists on (Keras: .weights.h5). A folder replaces only a missing
    or empty folder at `path` (rename(2)); a file replaces a file."""
    tmp = _new_temporary(path, suffix, folder)
    try:
        yield tmp
        if not folder:
            _fsync(tmp)
        os.replace(tmp, path)
        _fsync(os.path.dirname(tmp))  # the rename itself survives a power cut
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """An open file (mode "wb" or "w") whose content replaces `path` when the body ends without an error."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def write_text(path, text, exclusive=False):
    """Replace `path` with `text`. With exclusive=True, create `path` only if nothing is there yet (FileExistsError
    otherwise), whole or not at all: the finished temporary file is hard-linked to `path`, which fails if `path`
    exists, so of two writers exactly one succeeds."""
    if not exclusive:
        with atomic_write(path, "w") as f:
            f.write(text)
        return
    tmp = _new_temporary(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        _fsync(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: exclusive create, then the content
            with open(path, "x") as f:
                f.write(text)
        _fsync(os.path.dirname(tmp))
    finally:
        _remove(tmp)


def _new_temporary(path, suffix="", folder=False):
    """A new, empty file (or folder) with a random name in `path`'s folder, created exclusively."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp{suffix}")
    if folder:
        os.mkdir(tmp)
    else:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
    return tmp


def _remove(tmp):
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.lexists(tmp):
        os.remove(tmp)


def _fsync(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened for reading on some file systems: the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""files.atomic_path: the one writer every output goes through."""
import os
import stat

import pytest

import files


def test_the_destination_appears_whole_and_nothing_else_is_left(tmp_path):
    path = tmp_path / "out.txt"
    files.write_text(str(path), "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_a_failing_body_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_write(str(path), "w") as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_temporary_names_are_random_and_created_exclusively(tmp_path):
    names = set()
    for _ in range(3):
        with files.atomic_path(str(tmp_path / "x.npz")) as tmp:
            assert os.path.isfile(tmp) and not os.path.islink(tmp)
            assert os.path.dirname(tmp) == str(tmp_path)
            names.add(os.path.basename(tmp))
    assert len(names) == 3


def test_a_planted_symlink_under_a_guessable_name_is_never_written_through(tmp_path, monkeypatch):
    """Whoever can predict the temporary name plants a link to a victim file; the write must not follow it."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: "0" * (2 * n))  # a predictable name, the worst case
    planted = tmp_path / f".out.npz.{'0' * 16}.tmp"
    os.symlink(victim, planted)
    with pytest.raises(FileExistsError):
        with files.atomic_write(str(tmp_path / "out.npz")) as f:
            f.write(b"attacker-controlled destination")
    assert victim.read_text() == "precious" and not (tmp_path / "out.npz").exists()


def test_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        files.write_text(str(tmp_path / "shared.json"), "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "shared.json").st_mode) == 0o644


def test_a_folder_replaces_only_a_missing_or_empty_folder(tmp_path):
    target = tmp_path / "images"
    with files.atomic_path(str(target), folder=True) as tmp:
        open(os.path.join(tmp, "000000.png"), "wb").close()
    assert os.listdir(target) == ["000000.png"]
    with pytest.raises(OSError):
        with files.atomic_path(str(target), folder=True) as tmp:
            open(os.path.join(tmp, "000001.png"), "wb").close()
    assert os.listdir(target) == ["000000.png"] and sorted(os.listdir(tmp_path)) == ["images"]

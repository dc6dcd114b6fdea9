"""vqfr.utils.atomic: normal permissions, all-or-nothing groups; vqfr.utils.lock: one run per folder."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from vqfr.errors import VQFRError
from vqfr.io import write_image
from vqfr.utils import atomic
from vqfr.utils.atomic import atomic_write_bytes, atomic_write_group, create_temp, remove_stale_temps
from vqfr.utils.download import download_url
from vqfr.utils.lock import LOCK_NAME, join_folder_lock, output_folder_lock
from vqfr.utils.paths import shown

posix_modes = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_modes
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    write_image(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    atomic_write_group([(tmp_path / "c.txt", b"1"), (tmp_path / "sub" / "d.txt", b"2")])
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    download_url(source.as_uri(), tmp_path / "e.pth", progress=False)
    for name in ("a.bin", "b.png", "c.txt", "sub/d.txt", "e.pth"):
        assert _mode(tmp_path / name) == expected, name


@posix_modes
def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "kept.txt"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o640


def test_group_failure_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "old.txt").write_bytes(b"untouched")
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    files = [(tmp_path / f"{i}.txt", b"data") for i in range(4)]
    with pytest.raises(OSError, match="No space"):
        atomic_write_group(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]  # no temp file, no half group


def test_group_interrupt_while_writing_leaves_nothing(tmp_path, monkeypatch):
    real_fsync = os.fsync
    calls = []

    def interrupted_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_group([(tmp_path / "a.png", b"1"), (tmp_path / "b.png", b"2"), (tmp_path / "c.png", b"3")])
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_killed_writers_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    fd, tmp = create_temp(tmp_path / "sub" / "x.png")
    os.close(fd)  # its writer was killed before the rename
    kept = [".hidden", ".y.png.0123abcd.part", ".z.png.tmp", "x.png"]
    for name in kept:
        (tmp_path / name).write_text("kept")
    assert remove_stale_temps(tmp_path) == 1 and not tmp.exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == kept


def test_shown_escapes_only_unprintable_names():
    assert shown(Path("dir/a photo é.jpg")) == "dir/a photo é.jpg"
    assert shown("a\nb.jpg") == "a\\nb.jpg"  # the same escaping as every one-line message
    assert "\n" not in shown("x\r\n\t.png")


# ---------------------------------------------------------------- output folder lock
@pytest.mark.skipif(os.name != "posix", reason="advisory locks are POSIX-only")
def test_second_run_is_refused_naming_the_first(tmp_path, lock_holder):
    folder = tmp_path / "out"
    proc = lock_holder(folder)
    with pytest.raises(VQFRError) as info:
        with output_folder_lock(folder, "vqfr restore"):
            pass
    msg = str(info.value)
    assert f"pid {proc.pid}" in msg and "in use by another run" in msg and "\n" not in msg
    proc.communicate("")
    with output_folder_lock(folder):  # released when the holder exits
        assert (folder / LOCK_NAME).exists()
    assert not (folder / LOCK_NAME).exists()


@pytest.mark.skipif(os.name != "posix", reason="advisory locks are POSIX-only")
def test_ranks_of_one_run_share_the_lock_and_keep_other_runs_out(tmp_path, lock_holder):
    folder = tmp_path / "out"
    with pytest.raises(VQFRError, match="has no .vqfr.lock from rank 0"):
        with join_folder_lock(tmp_path):  # nothing to join
            pass
    rank0 = lock_holder(folder, "rank0")
    rank1 = lock_holder(folder, "join")  # a second rank of the same run gets in
    with pytest.raises(VQFRError, match=f"in use by another run \\(pid {rank0.pid} on "):
        with output_folder_lock(folder, "vqfr restore"):
            pass
    rank0.kill()  # rank 0 dies first: the rank still writing keeps other runs out
    rank0.wait()
    with pytest.raises(VQFRError, match=f"in use by another run \\(pid {rank0.pid} on "):
        with output_folder_lock(folder, "vqfr restore"):
            pass
    rank1.communicate("")
    with output_folder_lock(folder):  # the last rank ended: the folder is free
        with join_folder_lock(folder):  # re-entrant: this process holds it already
            pass
    assert not (folder / LOCK_NAME).exists()


def test_stale_lock_file_is_taken_over_and_lock_is_reentrant(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_NAME).write_text("pid 999999 on elsewhere, vqfr restore, since long ago\n")  # a killed run
    with output_folder_lock(folder):
        with output_folder_lock(folder):  # the batch inside the CLI takes it again
            pass
        assert f"pid {os.getpid()}" in (folder / LOCK_NAME).read_text()
    assert list(folder.iterdir()) == []


def test_lock_removes_the_folders_it_created_when_left_empty(tmp_path):
    with output_folder_lock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b").is_dir()
    assert list(tmp_path.iterdir()) == []
    with output_folder_lock(tmp_path / "kept"):
        (tmp_path / "kept" / "results.json").write_text("{}")
    assert (tmp_path / "kept" / "results.json").exists()


def test_unwritable_folder_is_a_one_line_error(tmp_path, monkeypatch):
    real_mkdir = os.mkdir

    def read_only_mkdir(path, *args, **kwargs):
        if Path(path).name == "denied":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    with pytest.raises(VQFRError, match=r"cannot create the output folder .*denied/out \(Permission denied\)"):
        with output_folder_lock(tmp_path / "denied" / "out"):
            pass


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(VQFRError, match="cannot write into the output folder"):
            with output_folder_lock(folder):
                pass
    finally:
        folder.chmod(0o755)

"""One run at a time per output folder: an advisory lock file inside it.

Two runs writing into the same folder would overwrite each other's outputs and each write a
``results.json`` that lists only its own. The lock is ``fcntl.flock`` on ``FOLDER/.vqfr.lock``:
the kernel drops it when its process ends, however it ends, so a lock file left by a killed run
is simply taken over (no stale-lock guessing from pids). The file records the holder's pid,
host and command for the error message of a second run, and is removed on a clean exit.

A run of several processes (torchrun ranks writing into one folder) shares the lock: rank 0
takes it as usual with ``shared=True``, which then holds it shared; the other ranks join with
:func:`join_folder_lock`. Any other run is refused as long as any rank of this one is alive.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from vqfr.errors import VQFRError
from vqfr.utils.paths import shown

try:  # POSIX; elsewhere runs are not locked (see output_folder_lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".vqfr.lock"

_held: dict[str, int] = {}  # folders this process has locked -> nesting depth


@contextlib.contextmanager
def output_folder_lock(folder: str | os.PathLike, command: str = "vqfr", shared: bool = False) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock for the ``with`` block; yields the folder.

    Raises a one-line :class:`VQFRError` when the folder cannot be created or written (so callers
    learn it before any slow work) or when another process holds the lock (naming its pid).
    Re-entrant within a process. Folders it created are removed again if still empty at the end.
    ``shared``: once taken, hold the lock shared so that the other processes of this run can
    :func:`join_folder_lock` it (they must join only after this call succeeded).
    """
    folder = Path(folder).expanduser()
    key = str(folder.resolve())
    if key in _held:
        with _reentered(key):
            yield folder
        return
    created = _make_folder(folder)
    try:
        fd = _acquire(folder, command, shared)
    except BaseException:
        _remove_empty(created)
        raise
    _held[key] = 1
    try:
        yield folder
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK_NAME)  # while still holding it, so no one locks a file about to vanish
        os.close(fd)
        _remove_empty(created)


@contextlib.contextmanager
def _reentered(key: str) -> Iterator[None]:
    """This process already holds the lock: count the nested holder, release nothing at its end."""
    _held[key] += 1
    try:
        yield
    finally:
        _held[key] -= 1


def _flock_or_refuse(fd: int, folder: Path, mode: int) -> None:
    """Take ``mode`` (LOCK_EX or LOCK_SH) on ``fd`` without waiting; if another run holds the lock,
    close ``fd`` and say who holds it, in one line."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(fd)
        os.close(fd)
        raise VQFRError(
            f"output folder {shown(folder)} is in use by another run ({holder}); wait for it to finish "
            "or choose another folder"
        ) from None


def _make_folder(folder: Path) -> list[Path]:
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VQFRError(f"cannot create the output folder {shown(folder)} ({err.strerror or err})") from None
    return missing  # deepest first


def _remove_empty(created: list[Path]) -> None:
    for path in created:
        with contextlib.suppress(OSError):
            path.rmdir()  # fails (and stops nothing) when the folder is not empty


@contextlib.contextmanager
def join_folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold, shared, the lock another process of this run took with ``output_folder_lock(shared=True)``.

    One-line :class:`VQFRError` when there is no such lock file (e.g. the folder is not on a file
    system this process shares with rank 0) or when it is held exclusively. Re-entrant like
    :func:`output_folder_lock`, which it satisfies in this process. The lock file is left in place.
    """
    folder = Path(folder).expanduser()
    key = str(folder.resolve())
    if key in _held:
        with _reentered(key):
            yield folder
        return
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise VQFRError(
            f"output folder {shown(folder)} has no {LOCK_NAME} from rank 0 of this run: "
            "every rank must see the output folder on a shared file system"
        ) from None
    except OSError as err:
        raise VQFRError(f"cannot write into the output folder {shown(folder)} ({err.strerror or err})") from None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise VQFRError(f"output folder {shown(folder)} is in use by another run ({holder})") from None
    _held[key] = 1
    try:
        yield folder
    finally:
        del _held[key]
        os.close(fd)


def _acquire(folder: Path, command: str, shared: bool = False) -> int:
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            raise VQFRError(f"cannot write into the output folder {shown(folder)} ({err.strerror or err})") from None
        if fcntl is None:  # pragma: no cover - no advisory locks here; still checked writability
            return fd
        _flock_or_refuse(fd, folder, fcntl.LOCK_EX)
        # A run that just finished may have unlinked the file we opened: lock the one at the path.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, {command}, since {stamp}\n".encode())
    except OSError as err:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise VQFRError(f"cannot write into the output folder {shown(folder)} ({err.strerror or err})") from None
    if shared and fcntl is not None:
        # flock converts by unlocking, then locking: another run may slip in between and win
        _flock_or_refuse(fd, folder, fcntl.LOCK_SH)
    return fd


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return " ".join(text.split()) or "pid unknown"  # one line, whatever the file holds

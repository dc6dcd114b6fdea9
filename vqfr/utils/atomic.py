"""Atomic file writes: write to a temporary file in the destination folder, then rename.

A reader never sees a half-written file, and an interrupted write never destroys
an existing one. Files get the permissions a plain ``open(path, "w")`` would give:
the umask (and default ACLs) for a new file, the old mode when one is replaced.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # create_temp's names with the default suffix


def create_temp(path: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new, empty, hidden temporary file beside ``path``; return ``(fd, temp_path)`` open for writing.

    Unlike ``tempfile.mkstemp`` (always mode 0600), the kernel applies the umask to mode 0666 as it
    does for any new file; replacing an existing file keeps that file's mode.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        if mode is not None and hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):
                os.fchmod(fd, mode)
        return fd, tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on clean exit fsync it and rename it onto ``path``."""
    if mode not in ("wb", "w"):
        raise ValueError("atomic_open supports 'wb' and 'w' only")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike, writer: Callable[[BinaryIO], None]) -> None:
    """Call ``writer(file)`` on a temporary file and move it onto ``path`` when it succeeds."""
    with atomic_open(path, "wb") as f:
        writer(f)


def atomic_write_group(files: Sequence[tuple[str | os.PathLike, bytes]]) -> None:
    """Write several files so that they appear all together or not at all.

    Every file is first written (and fsynced) under a temporary name; only when all of them are
    on disk are they renamed into place. A failure or an interrupt (KeyboardInterrupt included)
    at any point removes the temporary files and the ones already renamed, so a half set never
    stays behind. Files replaced by the group are gone either way.
    """
    temps: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path, data in files:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = create_temp(path)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for path in placed:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Remove the temporary files that killed writers left in ``folder`` and below; returns how many.

    A process killed outright (SIGKILL, power loss) cannot remove its temporary files. Call this
    only while nobody writes into ``folder`` (e.g. holding its output-folder lock).
    """
    removed = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            if _TEMP_NAME.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(parent, name))
                    removed += 1
    return removed

"""Path checks shared by every command that writes into an output folder."""

from __future__ import annotations

import os
from pathlib import Path


def blocking_file(folder: Path) -> Path | None:
    """The nearest existing path at or above ``folder`` when it is not a folder (so ``folder`` cannot be made).

    None when ``folder`` exists as a folder or can be created. Lets callers refuse a bad output
    location up front, with their own one-line wording, before any slow work.
    """
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    return None if existing.is_dir() else existing


def shown(path: str | os.PathLike) -> str:
    """``path`` as it should appear in a one-line message: as is when printable, else quoted with escapes.

    A newline, tab or undecodable byte in a file name would otherwise split (or crash) the line.
    """
    from vqfr.errors import one_line  # the one escaping rule for message text

    return one_line(os.fspath(path))


def unwritable_reason(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (created first if missing), or None when they can.

    Judged on the nearest existing path at or above ``folder``: a file in the way, or no write
    permission there (``os.access`` also reports a read-only file system). A full disk shows only
    when writing; callers turn that into one line too.
    """
    folder = Path(folder)
    blocked = blocking_file(folder)
    if blocked is not None:
        return f"{blocked} exists and is not a folder"
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None

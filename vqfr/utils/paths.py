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

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
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)

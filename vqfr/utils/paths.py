"""Path checks shared by every command that writes into an output folder."""

from __future__ import annotations

from pathlib import Path


def blocking_file(folder: Path) -> Path | None:
    """The nearest existing path at or above ``folder`` when it is not a folder (so ``folder`` cannot be made).

    None when ``folder`` exists as a folder or can be created. Lets callers refuse a bad output
    location up front, with their own one-line wording, before any slow work.
    """
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    return None if existing.is_dir() else existing

"""Reading and writing torch files: weights only on load, and one line of our own when either fails.

Every weight file the package reads (network checkpoints, training states, metric and loss
networks) goes through :func:`safe_load`, so a foreign, damaged or unsafe file gets the same
explanation everywhere. torch's own warnings (e.g. about pickle protocol 4) and its advice to
retry with ``weights_only=False`` are never shown: that retry is exactly what must not be done
with a file of unknown origin.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vqfr.errors import VQFRError
from vqfr.utils.atomic import atomic_save

# The legacy (pre-zip) torch.save format starts with this pickled magic number.
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
_ZIP_MAGIC = b"PK\x03\x04"
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def safe_load(path: str | os.PathLike, allowed_globals: Iterable[Any] = (), mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is a one-line VQFRError.

    ``allowed_globals`` extends the weights-only allowlist (e.g. numpy arrays in FID statistics).
    ``mmap`` maps the tensors instead of reading them (zip-format files only): cheap when only the
    small entries are wanted.
    """
    path = Path(path)
    if not path.exists():
        raise VQFRError(f"{path}: no such file")
    if path.is_dir():
        raise VQFRError(f"{path} is a folder, not a weight file")
    try:
        with path.open("rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except OSError as err:
        raise VQFRError(f"cannot read {path}: {err.strerror or err}") from None
    if not head:
        raise VQFRError(f"{path} is empty, not a PyTorch checkpoint")
    try:
        allowed = list(allowed_globals)
        # safe_globals is torch >= 2.5; only the callers that need an allowlist require it.
        extra = torch.serialization.safe_globals(allowed) if allowed else contextlib.nullcontext()
        with warnings.catch_warnings(), extra:
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - torch raises many types for foreign, damaged or unsafe files
        raise VQFRError(_explain(path, head, err)) from None


def _explain(path: Path, head: bytes, err: Exception) -> str:
    """Why ``torch.load`` refused ``path``, judged from the file's first bytes and torch's error."""
    unsafe = _GLOBAL.search(str(err))
    if unsafe:
        return (
            f"refusing to load {path}: it holds Python objects ({unsafe.group(1)}) besides tensors, "
            "and loading them could run code"
        )
    if head.startswith(_ZIP_MAGIC):
        return f"{path} is truncated or corrupt (a damaged PyTorch archive)"
    if head.startswith(_LEGACY_MAGIC):
        return f"{path} is truncated or corrupt (a damaged legacy PyTorch file)"
    if head[:1] == b"\x80":  # a pickle protocol marker, but not torch.save's
        return f"{path} is a plain Python pickle, not a PyTorch checkpoint (it is not unpickled, for safety)"
    return f"{path} is not a PyTorch checkpoint"


def safe_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically; a folder in the way or a full/read-only disk is one line.

    The file appears complete or not at all (nothing half-written is left behind).
    """
    path = Path(path)
    if path.is_dir():
        raise VQFRError(f"cannot save to {path}: it is a folder, give a file name")
    try:
        atomic_save(path, lambda f: torch.save(obj, f))
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a failed write as RuntimeError
        raise VQFRError(f"cannot write {path}: {_write_failure(err)}") from None


def _write_failure(err: Exception) -> str:
    if isinstance(err, OSError):
        return err.strerror or str(err)
    # e.g. "[enforce fail at inline_container.cc:...] . unexpected pos 64 vs 0": the disk filled up or went away
    return "the write failed part-way (is the disk full?)"

"""Training-state checkpoints: everything needed to continue a run exactly.

A checkpoint ``{out}/checkpoints/step_XXXXXXXX.pt`` holds the networks, the EMA, the
optimizers, the step, the RNG states of every rank and the config. It is written
atomically; only the newest ``keep_last`` are kept. Files load with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqfr.errors import VQFRError
from vqfr.nn.safe_load import safe_load, safe_save

_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.pt"


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_checkpoints(folder: str | os.PathLike, keep_last: int) -> None:
    for _, path in list_checkpoints(folder)[:-keep_last]:
        path.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form the weights-only loader (vqfr.nn.safe_load) accepts."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a training state atomically (one-line error on a full or read-only disk)."""
    safe_save(path, state)


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise VQFRError(f"resume checkpoint not found: {path}")
    try:
        state = safe_load(path)
    except VQFRError as err:
        raise VQFRError(f"cannot resume: {err}") from None
    if not isinstance(state, dict) or "step" not in state or "nets" not in state:
        raise VQFRError(f"{path} is not a vqfr training checkpoint (exported weights cannot be resumed)")
    return state


def resolve_resume(resume: str | None, ckpt_dir: Path) -> Path | None:
    """``None`` -> start fresh; ``'auto'`` -> newest checkpoint in ``ckpt_dir`` if any; else that path."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(ckpt_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if path.is_dir():
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found:
            raise VQFRError(f"no training checkpoints (step_*.pt) in {path}")
        return found[-1][1]
    if not path.is_file():
        raise VQFRError(f"resume checkpoint not found: {path}")
    return path

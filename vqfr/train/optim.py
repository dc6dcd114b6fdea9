"""The optimizers of a run and their learning-rate schedule (the same for every task)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import torch
from torch import nn


def adam(params: Iterable[nn.Parameter], opt_cfg: dict) -> torch.optim.Adam:
    """Adam from a ``train.optim_*`` block (``lr``, ``betas``, ``weight_decay``)."""
    return torch.optim.Adam(
        params,
        lr=float(opt_cfg["lr"]),
        betas=tuple(float(b) for b in opt_cfg.get("betas", (0.9, 0.999))),
        weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
    )


def lr_factor(scheduler: dict, step: int) -> float:
    """The multi-step schedule's factor for ``step`` (1-based): ``gamma`` per milestone already passed."""
    return float(scheduler["gamma"]) ** bisect.bisect_right(sorted(scheduler["milestones"] or []), step - 1)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

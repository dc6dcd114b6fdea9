"""Weight initialisation and freezing shared by all networks."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def init_weights(m: nn.Module) -> None:
    """Truncated-normal (std 0.02) convs and linears with zero bias; unit-scale norms (as published)."""
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def freeze_matching(module: nn.Module, substrings: Iterable[str]) -> None:
    """Turn off gradients of every parameter whose name contains one of ``substrings``."""
    substrings = list(substrings)
    for name, p in module.named_parameters():
        if any(s in name for s in substrings):
            p.requires_grad_(False)

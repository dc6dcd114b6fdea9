"""Mixed precision by parts: each part of a network runs in the dtype of its own weights.

The inference runtime casts chosen parts (texture decoder, main branch) to bfloat16 or float16
and keeps the rest (encoder, code selection) in float32; the networks move activations between
parts with :func:`to_dtype_of`. Discrete choices (which code) are always made in float32 with
autocast switched off (:func:`full_precision`), so reduced precision, or training under
autocast, never decides a code from a rounded logit or distance.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn


def dtype_of(module: nn.Module) -> torch.dtype:
    """The floating dtype of a module's first parameter (float32 for a module without any)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def to_dtype_of(x: Tensor, module: nn.Module) -> Tensor:
    """``x`` in ``module``'s dtype: a no-op when they already match (in training without autocast, always)."""
    dtype = dtype_of(module)
    return x if x.dtype == dtype else x.to(dtype)


def full_precision(x: Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on ``x``'s device, so the ops inside run in the dtype of their inputs (float32)."""
    kind = x.device.type
    if kind in ("cpu", "cuda", "mps", "xpu"):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()

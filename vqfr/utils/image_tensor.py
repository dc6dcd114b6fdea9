"""Network output ([-1, 1] RGB tensors) to 8-bit images, one rounding rule for the whole package."""

from __future__ import annotations

import numpy as np


def tensor_to_uint8(t) -> np.ndarray:
    """``(..., 3, H, W)`` tensor in [-1, 1] -> ``(..., H, W, 3)`` uint8 RGB array (clamped, rounded).

    Restoration, validation and training previews all go through this, so a saved face and the
    PSNR measured on it always see the same pixels.
    """
    import torch

    u8 = t.detach().float().clamp(-1.0, 1.0).add_(1.0).mul_(127.5).round_().to(torch.uint8)
    return np.ascontiguousarray(u8.movedim(-3, -1).cpu().numpy())

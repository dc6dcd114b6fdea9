"""MATLAB ``imresize`` (bicubic, with antialiasing), as NIQE's reference code needs.

NIQE downsamples by 2 between its two scales with MATLAB's ``imresize(img, 0.5)``. OpenCV's and
PIL's bicubic differ from it (kernel a=-0.5 widened by 1/scale when shrinking, symmetric border
padding), so the resize is re-implemented here.

The arithmetic is float32 in PyTorch, one matrix-vector product per output row/column, because
BasicSR's port (whose NIQE numbers we reproduce) works that way: NIQE splits pixels of flat regions
by the sign of tiny normalized values, so even a last-bit difference in the resize can move the
score by 1e-2. Matching the reference bit for bit avoids that.
"""

from __future__ import annotations

import math

import numpy as np


def _cubic(x):
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic'), on a float32 tensor."""
    absx = x.abs()
    absx2 = absx**2
    absx3 = absx**3
    inner = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1).type_as(absx)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2)).type_as(absx)
    return inner + outer


def resize_weights(in_length: int, out_length: int, scale: float, antialiasing: bool):
    """Per-output-sample weights (out, k) and 0-based start indices into the padded input.

    Returns (weights float32 tensor, start indices list[int], pad_start, pad_end).
    """
    import torch

    kernel_width = 4.0
    shrink_aa = scale < 1 and antialiasing
    if shrink_aa:
        kernel_width = kernel_width / scale  # widen the kernel: interpolate and low-pass at once

    x = torch.linspace(1, out_length, out_length)
    # Map output sample centres to input coordinates (1-based, MATLAB convention).
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float32)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if shrink_aa else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)

    # Trim the outer taps as the reference port does: if column 0 holds any zero weight keep
    # columns 1..taps-2, then if the last column held any zero keep the first taps-2 of those.
    zeros_per_column = (weights == 0).sum(dim=0)
    if int(zeros_per_column[0]) != 0:
        indices, weights = indices[:, 1 : taps - 1], weights[:, 1 : taps - 1]
    if int(zeros_per_column[-1]) != 0:
        indices, weights = indices[:, : taps - 2], weights[:, : taps - 2]

    pad_start = int(-indices.min() + 1)
    pad_end = int(indices.max() - in_length)
    starts = [int(v) + pad_start - 1 for v in indices[:, 0].tolist()]
    return weights.contiguous(), starts, pad_start, pad_end


def _symmetric_pad(img, pad_start: int, pad_end: int, dim: int):
    """Mirror ``pad_start``/``pad_end`` samples (edge sample included) onto each end of ``dim``."""
    import torch

    n = img.shape[dim]
    parts = []
    if pad_start > 0:
        parts.append(img.narrow(dim, 0, pad_start).flip(dim))
    parts.append(img)
    if pad_end > 0:
        parts.append(img.narrow(dim, n - pad_end, pad_end).flip(dim))
    return torch.cat(parts, dim=dim)


def imresize(img: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
    """Resize an HxW or HxWxC float image by ``scale`` like MATLAB ``imresize(img, scale)`` (bicubic).

    Output size is ``ceil(H * scale) x ceil(W * scale)``; values are float32, not rounded or clipped.
    """
    import torch

    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC image, got shape {img.shape}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    squeeze = img.ndim == 2
    chw = torch.from_numpy(np.ascontiguousarray(img[..., None] if squeeze else img).transpose(2, 0, 1)).float()
    channels, in_h, in_w = chw.shape
    out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)

    with torch.no_grad():
        # Rows first: each output row is a weighted sum of k padded input rows.
        w_h, starts_h, pad_s, pad_e = resize_weights(in_h, out_h, scale, antialiasing)
        padded = _symmetric_pad(chw, pad_s, pad_e, dim=1)
        k = w_h.shape[1]
        rows = torch.empty(channels, out_h, in_w)
        for i, s in enumerate(starts_h):
            for c in range(channels):
                rows[c, i, :] = padded[c, s : s + k, :].transpose(0, 1).mv(w_h[i])

        # Then columns.
        w_w, starts_w, pad_s, pad_e = resize_weights(in_w, out_w, scale, antialiasing)
        padded = _symmetric_pad(rows, pad_s, pad_e, dim=2)
        k = w_w.shape[1]
        out = torch.empty(channels, out_h, out_w)
        for i, s in enumerate(starts_w):
            for c in range(channels):
                out[c, :, i] = padded[c, :, s : s + k].mv(w_w[i])

    result = out.numpy().transpose(1, 2, 0)
    return result[..., 0] if squeeze else result

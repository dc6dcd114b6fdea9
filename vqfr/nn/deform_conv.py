"""Modulated deformable convolution (DCNv2) in plain PyTorch.

Semantics are those of ``torchvision.ops.deform_conv2d`` with a mask: for output pixel
``(i, j)``, tap ``k = (ki, kj)`` and deformable group ``g``, the input channels of group ``g``
are sampled bilinearly at ``(i*s - p + ki*d + dy, j*s - p + kj*d + dx)``, where
``dy = offset[:, 2*(g*K+k)]`` and ``dx = offset[:, 2*(g*K+k)+1]``; corner neighbours outside the
map count as zero, so a sample at or beyond one pixel outside the map is zero. Each sample is
multiplied by ``mask[:, g*K+k]`` before the weighted sum over channels and taps.

Sampling uses :func:`torch.nn.functional.grid_sample` with zero padding, whose bilinear rule is
exactly this one (positions are converted to its normalised coordinates and back, which costs
about 1e-16 relative in float64); it is a fused kernel on every device and dtype, about three
times faster on a CPU than gathering the four neighbours separately, and autograd covers input,
offsets and mask.
The ``C*K`` column tensor is built for a band of output rows at a time so memory stays bounded
on large maps (``max_column_bytes``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_DEFAULT_COLUMN_BYTES = 256 * 2**20


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
    max_column_bytes: int = _DEFAULT_COLUMN_BYTES,
) -> Tensor:
    """Deformable convolution v2 (v1 when ``mask`` is None); argument order as torchvision's."""
    n, c, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_per_group != c:
        raise ValueError(f"grouped convolution is not supported (weight expects {c_per_group} of {c} channels)")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    k = kh * kw
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if offset.shape[1] % (2 * k) != 0:
        raise ValueError(f"offset has {offset.shape[1]} channels, expected a multiple of {2 * k}")
    groups = offset.shape[1] // (2 * k)
    if c % groups != 0:
        raise ValueError(f"{c} input channels cannot be split into {groups} deformable groups")
    if tuple(offset.shape[2:]) != (h_out, w_out):
        raise ValueError(f"offset is {tuple(offset.shape[2:])}, output is {(h_out, w_out)}")
    if mask is not None and mask.shape[1] != groups * k:
        raise ValueError(f"mask has {mask.shape[1]} channels, expected {groups * k}")

    # Positions and sampling run in float32 (float64 for float64 input) whatever the input dtype:
    # float16 spaces representable values 0.5 px apart above 512 and bfloat16 2 px apart above
    # 256, which would snap the sampling positions of a 512 px level to a coarse grid.
    dtype, device = x.dtype, x.device
    pos_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    offset = offset.to(pos_dtype).reshape(n, groups, k, 2, h_out, w_out)
    if mask is not None:
        mask = mask.to(pos_dtype).reshape(n * groups, 1, k, h_out, w_out)
    x_groups = x.reshape(n * groups, c // groups, h, w).to(pos_dtype)

    # Base sampling position of every tap and output pixel: (i*s - p + ki*d, j*s - p + kj*d).
    tap_y = (torch.arange(kh, device=device, dtype=pos_dtype) * dh - ph).repeat_interleave(kw)  # (K,)
    tap_x = (torch.arange(kw, device=device, dtype=pos_dtype) * dw - pw).repeat(kh)  # (K,)
    out_x = torch.arange(w_out, device=device, dtype=pos_dtype) * sw  # (Wo,)

    weight_2d = weight.reshape(c_out, c * k)
    # The sampled columns and their masked copy are alive at once.
    bytes_per_row = max(1, 2 * n * c * k * w_out * x_groups.element_size())
    rows_per_chunk = max(1, min(h_out, max_column_bytes // bytes_per_row))

    outputs = []
    for r0 in range(0, h_out, rows_per_chunk):
        r1 = min(h_out, r0 + rows_per_chunk)
        rows = r1 - r0
        out_y = torch.arange(r0, r1, device=device, dtype=pos_dtype) * sh  # (R,)
        off = offset[..., r0:r1, :]  # (n, G, K, 2, R, Wo)
        py = off[:, :, :, 0] + (tap_y.view(1, 1, k, 1, 1) + out_y.view(1, 1, 1, rows, 1))
        px = off[:, :, :, 1] + (tap_x.view(1, 1, k, 1, 1) + out_x.view(1, 1, 1, 1, w_out))
        # grid_sample (align_corners=False) reads normalised u at pixel (u + 1) * size / 2 - 0.5.
        grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).view(n * groups, k * rows, w_out, 2)
        cols = F.grid_sample(x_groups, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        cols = cols.view(n * groups, c // groups, k, rows, w_out)
        if mask is not None:
            cols = cols * mask[..., r0:r1, :]
        cols = cols.reshape(n, c * k, rows * w_out).to(weight_2d.dtype)
        outputs.append(torch.matmul(weight_2d, cols).view(n, c_out, rows, w_out))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 whose offsets and mask are predicted from a separate feature.

    ``forward(x, feat)``: ``conv_offset(feat)`` gives ``3*G*K`` channels, split into equal chunks
    ``(o1, o2, m)``; offsets are ``cat(o1, o2)`` and the mask is ``sigmoid(m)``. Keys: ``weight``,
    ``bias``, ``conv_offset.weight``, ``conv_offset.bias`` (the layout of the released weights).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        deformable_groups: int = 1,
        max_column_bytes: int = _DEFAULT_COLUMN_BYTES,
    ) -> None:
        super().__init__()
        self.padding = padding
        self.deformable_groups = deformable_groups
        self.max_column_bytes = max_column_bytes
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        k = kernel_size * kernel_size
        self.conv_offset = nn.Conv2d(in_channels, deformable_groups * 3 * k, kernel_size, padding=padding)
        bound = 1.0 / math.sqrt(in_channels * k)
        nn.init.uniform_(self.weight, -bound, bound)
        # Zero offsets and mask logits: the layer starts as a plain convolution scaled by 0.5.
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        o1, o2, m = torch.chunk(self.conv_offset(feat), 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(m)

    def forward(self, x: Tensor, feat: Tensor) -> Tensor:
        offset, mask = self.offsets_and_mask(feat)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            padding=self.padding,
            mask=mask,
            max_column_bytes=self.max_column_bytes,
        )

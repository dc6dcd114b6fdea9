"""Modulated deformable convolution (DCNv2) in plain PyTorch.

Semantics are those of ``torchvision.ops.deform_conv2d`` with a mask: for output pixel
``(i, j)``, tap ``k = (ki, kj)`` and deformable group ``g``, the input channels of group ``g``
are sampled bilinearly at ``(i*s - p + ki*d + dy, j*s - p + kj*d + dx)``, where
``dy = offset[:, 2*(g*K+k)]`` and ``dx = offset[:, 2*(g*K+k)+1]``; corner neighbours outside the
map count as zero, so a sample at or beyond one pixel outside the map is zero. Each sample is
multiplied by ``mask[:, g*K+k]`` before the weighted sum over channels and taps.

Two ways to build the ``C*K`` sampled columns, same results to float rounding:

* CPU inference (autograd off): the input, channels last and framed by zeros, is a table of
  ``C/G``-channel rows (one per pixel and group); every sample is
  :func:`torch.nn.functional.embedding_bag` of its four corner rows with the bilinear weights
  times the mask as per-sample weights. The positions are clamped to ``[-1, size]``, where every
  corner outside the map lands in the zero frame, so no validity test is needed, and the mask
  costs nothing extra. The columns come out pixel-major, ready for one matrix product with the
  (reordered) weight, and the output is channels last. About 1.5-2x faster than the grid path on
  a CPU, and it never converts reduced-precision input to float32.
* Elsewhere, in training, and while exporting to ONNX (which has GridSample but no weighted
  embedding bag): :func:`torch.nn.functional.grid_sample` with zero padding, whose bilinear
  rule is exactly this one (positions are converted to its normalised coordinates and back,
  about 1e-16 relative in float64), then the mask and a matrix product.

Autograd covers input, offsets, mask, weight and bias on both. The columns are built for a band
of output rows at a time so memory stays bounded on large maps (``max_column_bytes``); on a CPU
small bands that stay in cache are also the fastest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_DEFAULT_COLUMN_BYTES = 4 * 2**20  # CPU: a few rows of a 512 px map, which stay in cache
_GRID_COLUMN_BYTES = 256 * 2**20  # grid path (GPU): large bands, fewer kernel launches
_EXACT_FLOAT32_INDEX = 2**24  # float32 holds every integer below this exactly


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _uses_gather(x: Tensor) -> bool:
    """The gather path: CPU inference. Training keeps the grid path its recorded losses were made with
    (the two agree to rounding, but Adam turns rounding in near-zero gradients into different steps)."""
    exporting = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting()
    return x.device.type == "cpu" and not exporting and not torch.is_grad_enabled()


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
    max_column_bytes: int | None = None,
) -> Tensor:
    """Deformable convolution v2 (v1 when ``mask`` is None); argument order as torchvision's.

    ``max_column_bytes`` bounds the sampled columns alive at once (default: a few MiB on a CPU,
    256 MiB elsewhere). On a CPU the output is channels last (``x``'s memory format otherwise).
    """
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
    geometry = (kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out, groups)
    if _uses_gather(x):
        budget = _DEFAULT_COLUMN_BYTES if max_column_bytes is None else max_column_bytes
        return _gather_deform_conv2d(x, offset, weight, bias, mask, geometry, budget)
    budget = _GRID_COLUMN_BYTES if max_column_bytes is None else max_column_bytes
    return _grid_deform_conv2d(x, offset, weight, bias, mask, geometry, budget)


def _gather_deform_conv2d(
    x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None, geometry: tuple, budget: int
) -> Tensor:
    """The CPU path: weighted embedding bags over a zero-framed channels-last table (see the module doc)."""
    kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out, groups = geometry
    n, c, h, w = x.shape
    c_out = weight.shape[0]
    k = kh * kw
    cg = c // groups
    device = x.device
    # Weights and positions: float32 (float64 for float64 input). Reduced-precision sampling
    # positions would snap to a coarse grid on large maps (bfloat16 spaces values 2 px apart
    # above 256); the bilinear weights are rounded to the table's dtype only at the end.
    pos_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w3 = w + 3  # frame: one zero column left, two right (a clamped position w reads w and w+1)
    plane = (h + 3) * w3 * groups  # table rows per image
    if pos_dtype == torch.float32 and plane >= _EXACT_FLOAT32_INDEX:
        pos_dtype = torch.float64  # row indices are computed in the position dtype: keep them exact
    index_dtype = torch.int32 if n * plane < 2**31 else torch.int64
    table = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 2, 1, 2)).reshape(n * plane, cg)
    # Columns ordered (group, tap, channel): reorder the (small) weight to match.
    weight_2d = weight.reshape(c_out, groups, cg, k).transpose(2, 3).reshape(c_out, groups * k * cg)
    offsets = offset.permute(0, 2, 3, 1).unflatten(3, (groups, k, 2))  # (n, Ho, Wo, G, K, 2), a view
    masks = None if mask is None else mask.permute(0, 2, 3, 1).unflatten(3, (groups, k))

    def arange(size: int, step: int, start: int) -> Tensor:
        return torch.arange(size, device=device, dtype=pos_dtype) * step + start

    # Base position of every row / column and tap, shaped to broadcast against (R, Wo, G, K).
    base_y = arange(h_out, sh, -ph).view(h_out, 1, 1, 1) + arange(kh, dh, 0).repeat_interleave(kw)
    base_x = arange(w_out, sw, -pw).view(w_out, 1, 1) + arange(kw, dw, 0).repeat(kh)
    # Table row of corner (y, x) in group g: ((y + 1) * w3 + x + 1) * G + g, plus the image's plane.
    group_row = arange(groups, 1, (w3 + 1) * groups).view(groups, 1)
    corners = torch.tensor([0, groups, w3 * groups, (w3 + 1) * groups], device=device, dtype=index_dtype)

    bytes_per_row = w_out * k * (c * table.element_size() + groups * 4 * (8 + table.element_size()))
    rows_per_chunk = max(1, min(h_out, budget // max(1, bytes_per_row)))
    in_place = not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)))
    out = torch.empty(n, h_out, w_out, c_out, device=device, dtype=weight.dtype) if in_place else None
    pieces = []
    for b in range(n):
        for r0 in range(0, h_out, rows_per_chunk):
            r1 = min(h_out, r0 + rows_per_chunk)
            off = offsets[b, r0:r1]
            py = (off[..., 0].to(pos_dtype) + base_y[r0:r1]).clamp(-1, h)
            px = (off[..., 1].to(pos_dtype) + base_x).clamp(-1, w)
            fy, fx = py.floor(), px.floor()
            ly, lx = py - fy, px - fx
            rows = ((fy * (w3 * groups) + fx * groups) + group_row).to(index_dtype)
            index = rows.unsqueeze(-1) + (corners + b * plane)  # (R, Wo, G, K, 4)
            hx = 1 - lx
            if masks is None:
                hy = 1 - ly
            else:  # the mask folded into the row weights
                m = masks[b, r0:r1].to(pos_dtype)
                ly = m * ly
                hy = m - ly
            # Corner order (y0, x0), (y0, x1), (y1, x0), (y1, x1) as in ``corners``; four planar
            # products stacked are 3x faster than one broadcast (.., 2, 1) * (.., 1, 2) product.
            corner_weights = torch.stack((hy * hx, hy * lx, ly * hx, ly * lx), dim=-1).to(table.dtype)
            cols = F.embedding_bag(
                index.reshape(-1, 4), table, per_sample_weights=corner_weights.reshape(-1, 4), mode="sum"
            ).view(-1, groups * k * cg)
            cols = cols.to(weight_2d.dtype)
            if out is not None:
                dest = out[b, r0:r1].view(-1, c_out)
                if bias is None:
                    torch.mm(cols, weight_2d.t(), out=dest)
                else:
                    torch.addmm(bias, cols, weight_2d.t(), out=dest)
            else:
                piece = cols @ weight_2d.t() if bias is None else torch.addmm(bias, cols, weight_2d.t())
                pieces.append(piece.view(r1 - r0, w_out, c_out))
    if out is None:  # autograd does not record out= products
        out = torch.cat(pieces).view(n, h_out, w_out, c_out)
    return out.permute(0, 3, 1, 2)


def _grid_deform_conv2d(
    x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None, geometry: tuple, budget: int
) -> Tensor:
    """The grid_sample path (GPU, ONNX export): columns sampled in float32 (float64 for float64 input)."""
    kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out, groups = geometry
    n, c, h, w = x.shape
    c_out = weight.shape[0]
    k = kh * kw
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
    rows_per_chunk = max(1, min(h_out, budget // bytes_per_row))

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
        max_column_bytes: int | None = None,
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
        raw = self.conv_offset(feat)
        split = 2 * raw.shape[1] // 3  # cat(o1, o2) of the three chunks is this leading slice: no copy
        return raw[:, :split], torch.sigmoid(raw[:, split:])

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

"""Building blocks shared by the VQGAN and VQFR networks (both versions).

Module and parameter names follow the released checkpoints exactly (every key and shape is checked
against ``tests/data/official_checkpoint_shapes.json``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def may_overwrite() -> bool:
    """Whether a layer may overwrite a fresh intermediate map in place: autograd off and not tracing.

    At 512 px a fresh map is 64 MiB, more than the C library reuses, so each one costs page faults
    that take as long as the arithmetic (a SiLU or an addition runs 2-3x faster in place).
    """
    return not torch.is_grad_enabled() and not torch.jit.is_tracing()


def fresh_silu(x: Tensor) -> Tensor:
    """SiLU that overwrites ``x`` when :func:`may_overwrite`: only for a map no one else holds."""
    return F.silu(x, inplace=may_overwrite())


class FreshSiLU(nn.SiLU):
    """:func:`fresh_silu` as a module (no parameters, so checkpoint keys are unchanged)."""

    def forward(self, x: Tensor) -> Tensor:
        return fresh_silu(x)


def add_to_fresh(fresh: Tensor, other: Tensor) -> Tensor:
    """``fresh + other``, into ``fresh`` when :func:`may_overwrite` (``fresh``: a map no one else holds)."""
    return fresh.add_(other) if may_overwrite() else fresh + other


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(32 groups, eps 1e-6, affine): the only normalisation these networks use."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


def conv1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1)


def norm_act_conv(cin: int, cout: int) -> nn.Sequential:
    """GN -> SiLU -> conv3: the output head of every encoder and decoder."""
    return nn.Sequential(group_norm(cin), FreshSiLU(), conv3(cin, cout))


class _ResnetBody(nn.Module):
    """``conv2(act(GN(conv1(act(GN(x))))))``: the residual branch both block versions share."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = conv3(cin, cout)
        self.norm2 = group_norm(cout)
        self.conv2 = conv3(cout, cout)

    def body(self, x: Tensor) -> Tensor:
        h = self.conv1(fresh_silu(self.norm1(x)))
        return self.conv2(fresh_silu(self.norm2(h)))


class ResnetBlock(_ResnetBody):
    """v2 residual block: ``body(x) + residual_func(x)``; ``residual_func`` is a 1x1 conv or identity."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout)
        self.residual_func = conv1(cin, cout) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return add_to_fresh(self.body(x), self.residual_func(x))


class ResnetBlockV1(_ResnetBody):
    """v1 residual block: the 1x1 projection is called ``shortcut_conv`` and exists only if needed."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout)
        self.shortcut_conv = conv1(cin, cout) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut_conv is None else self.shortcut_conv(x)
        return add_to_fresh(self.body(x), shortcut)


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of ``GN(x)``, added back to ``x``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = conv1(channels, channels)
        self.k = conv1(channels, channels)
        self.v = conv1(channels, channels)
        self.proj_out = conv1(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)

        def tokens(t: Tensor) -> Tensor:  # (b, c, h, w) -> (b, 1, h*w, c)
            return t.reshape(b, 1, c, h * w).transpose(2, 3)

        out = F.scaled_dot_product_attention(tokens(self.q(hn)), tokens(self.k(hn)), tokens(self.v(hn)))
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Pad right/bottom by one zero, then a stride-2 3x3 conv (v2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _phase_weight(weight: Tensor) -> Tensor:
    """The four 2x2 kernels (phase-major, ``(4*cout, cin, 2, 2)``) of a 3x3 kernel over a nearest x2 map.

    Output row ``2i`` of the 3x3 conv reads upsampled rows ``2i-1, 2i, 2i+1``, i.e. source rows
    ``i-1, i, i``: its taps over source rows ``(i-1, i)`` are ``(w0, w1 + w2)``. Row ``2i+1`` reads
    ``i, i, i+1``: ``(w0 + w1, w2)`` over ``(i, i+1)``. Columns likewise.
    """
    w0, w1, w2 = weight.unbind(2)
    rows = (torch.stack((w0, w1 + w2), 2), torch.stack((w0 + w1, w2), 2))
    phases = []
    for r in rows:  # phase (a, b) at index 2a + b
        c0, c1, c2 = r.unbind(3)
        phases += [torch.stack((c0, c1 + c2), 3), torch.stack((c0 + c1, c2), 3)]
    return torch.cat(phases)


_MIN_PHASE_PIXELS = 32 * 32  # below this input size, building the 4x larger kernel costs more than it saves


def _by_phase(x: Tensor) -> bool:
    """Whether :func:`upsample_conv3` runs phase by phase: float32/64 CPU inference on maps of 32x32 and up.

    In bfloat16 the convolutions are cheap next to the extra pass that interleaves the phases (and
    rounding the summed taps would change bf16 results); training and export keep the plain path.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or not may_overwrite():
        return False
    exporting = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting()
    return not exporting and x.shape[-2] * x.shape[-1] >= _MIN_PHASE_PIXELS


def upsample_conv3(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(nearest_x2(x))`` for a 3x3, stride-1, padding-1 ``conv``.

    In float32 CPU inference each of the four output phases (even/odd row and column) is a 2x2
    conv over ``x`` itself (:func:`_phase_weight`), so one 2x2 conv into ``4*cout`` channels over
    the ``(h+1, w+1)`` positions of ``x`` padded by one, then an interleave, gives the result with
    2.25x fewer multiplications and no upsampled copy of ``x``: 1.2-2.3x faster on the decoders'
    upsampling convs (1.6x summed; 512 px face, one thread), equal to float rounding (the summed taps).
    """
    if not _by_phase(x):
        return conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    n, _, h, w = x.shape
    cout = conv.out_channels
    weight = _phase_weight(conv.weight)
    if conv.weight.is_contiguous(memory_format=torch.channels_last):  # as the runtime prepares it
        weight = weight.contiguous(memory_format=torch.channels_last)
    bias = None if conv.bias is None else conv.bias.repeat(4)
    phases = F.conv2d(x, weight, bias, padding=1)  # (n, 4*cout, h+1, w+1)
    layout = torch.channels_last if phases.is_contiguous(memory_format=torch.channels_last) else None
    out = torch.empty(n, cout, 2 * h, 2 * w, dtype=phases.dtype, device=x.device)
    if layout is not None:
        out = out.contiguous(memory_format=layout)
    grid = out.unflatten(3, (w, 2)).unflatten(2, (h, 2))  # (n, cout, h, 2, w, 2): a view
    for a in (0, 1):
        for b in (0, 1):
            k = 2 * a + b
            grid[:, :, :, a, :, b] = phases[:, k * cout : (k + 1) * cout, a : a + h, b : b + w]
    return out


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv (v2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return upsample_conv3(x, self.conv)


class NearestUpConv(nn.Sequential):
    """``Sequential(nearest x2, conv3)`` (the v2 main decoder's keys: ``.1.weight``) run as :func:`upsample_conv3`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.UpsamplingNearest2d(scale_factor=2), conv3(cin, cout))

    def forward(self, x: Tensor) -> Tensor:
        return upsample_conv3(x, self[1])


class UpDownSample(nn.Module):
    """v1 resampling: 'down' = bilinear resize by 1/rate then conv; 'up' = conv then resize by rate.

    With ``rate == 1`` it is the identity and has no parameters.
    """

    def __init__(self, cin: int, cout: int, rate: float, direction: str) -> None:
        super().__init__()
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        self.rate = rate
        self.direction = direction
        if rate != 1:
            self.conv = conv3(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        if self.rate == 1:
            return x
        h, w = x.shape[-2:]
        if self.direction == "up":
            size = (int(self.rate * h), int(self.rate * w))
            return F.interpolate(self.conv(x), size=size, mode="bilinear", align_corners=False)
        size = (int(h / self.rate), int(w / self.rate))
        return self.conv(F.interpolate(x, size=size, mode="bilinear", align_corners=False))

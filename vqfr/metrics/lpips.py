"""LPIPS (VGG variant, v0.1): learned perceptual distance between two images; lower is closer.

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018.
Five VGG-16 stages (relu1_2 ... relu5_3) are unit-normalized along channels, squared differences
are weighted by learned 1x1 layers, averaged spatially and summed. Written in plain PyTorch (no
torchvision); the weights come from two files: the torchvision ImageNet VGG-16 (``vgg16-397923af.pth``)
and the LPIPS linear layers (``vgg.pth`` of the lpips package, v0.1).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from vqfr.metrics.weights import LPIPS_LINEAR, LPIPS_VGG16, fit_state_dict, load_state_dict_file

# VGG-16: convolutions per stage (a 2x2 max pool between stages) and the published stage widths.
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
VGG16_WIDTHS = (64, 128, 256, 512, 512)
# Index (exclusive) in the features Sequential after each tapped ReLU: relu1_2, 2_2, 3_3, 4_3, 5_3.
_TAPS = (4, 9, 16, 23, 30)
# Index of the first conv of each stage in ``features`` (used to read widths from a weight file).
_STAGE_FIRST_CONV = (0, 5, 10, 17, 24)


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


class _Linear(nn.Module):
    """1x1 conv without bias behind a dropout, laid out as the lpips file expects (``model.1.weight``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
    """

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS):
        super().__init__()
        self.features = vgg16_features(widths)
        self.linear = LinearHeads(widths)
        # Input scaling of LPIPS v0.1: moves [-1, 1] images to ImageNet-like statistics.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, start = [], 0
        for end in _TAPS:
            for layer in self.features[start:end]:
                x = layer(x)
            feats.append(x)
            start = end
        return feats

    @staticmethod
    def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self._stages((x - self.shift) / self.scale)
        fy = self._stages((y - self.shift) / self.scale)
        total = 0
        for i, (a, b) in enumerate(zip(fx, fy)):
            diff = (self._unit(a) - self._unit(b)) ** 2
            total = total + self.linear[i](diff).mean(dim=(2, 3))
        return total.flatten()


def load_lpips(linear_path: str | os.PathLike, vgg_path: str | os.PathLike) -> LPIPS:
    """Build LPIPS(VGG) in eval mode from the lpips linear-layer file and the VGG-16 ImageNet file."""
    vgg_state = load_state_dict_file(vgg_path, LPIPS_VGG16)
    features = {k[len("features.") :]: v for k, v in vgg_state.items() if k.startswith("features.")} or vgg_state
    try:
        widths = tuple(int(features[f"{i}.weight"].shape[0]) for i in _STAGE_FIRST_CONV)
    except KeyError:
        widths = VGG16_WIDTHS  # not a VGG file: fit_state_dict below reports what is wrong
    net = LPIPS(widths)
    fit_state_dict(net.features, features, vgg_path, LPIPS_VGG16)
    lin_state = load_state_dict_file(linear_path, LPIPS_LINEAR)
    fit_state_dict(net.linear, {k: v for k, v in lin_state.items() if k.startswith("lin")}, linear_path, LPIPS_LINEAR)
    return net.eval().requires_grad_(False)

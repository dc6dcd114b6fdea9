"""ArcFace ResNet-18 face embedding (arcface-pytorch's ``resnet_face18``), in plain PyTorch.

This is the identity network of the VQFR/GFPGAN evaluation (``resnet18_110.pth``): a gray
128x128 face in [-1, 1] maps to a 512-d embedding. Parameter names match the published file
(a ``module.`` prefix from DataParallel is stripped on loading).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
from torch import nn

from vqfr.metrics.weights import ARCFACE_R18, fit_state_dict, load_state_dict_file


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """Pre-BN residual block with a single shared PReLU (no squeeze-excitation, as in the released model)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, in_ch)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + residual)


class ArcFaceResNet18(nn.Module):
    """``forward`` maps (N, 1, 128, 128) gray faces in [-1, 1] to (N, 512) embeddings."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1 = nn.Sequential(IRBlock(64, 64), IRBlock(64, 64))
        self.layer2 = nn.Sequential(IRBlock(64, 128, stride=2), IRBlock(128, 128))
        self.layer3 = nn.Sequential(IRBlock(128, 256, stride=2), IRBlock(256, 256))
        self.layer4 = nn.Sequential(IRBlock(256, 512, stride=2), IRBlock(512, 512))
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, 512)
        self.bn5 = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))


def load_arcface(path: str | os.PathLike) -> ArcFaceResNet18:
    """Build the ArcFace network in eval mode from ``resnet18_110.pth`` (or a compatible state dict)."""
    net = ArcFaceResNet18()
    fit_state_dict(net, load_state_dict_file(path, ARCFACE_R18), path, ARCFACE_R18)
    return net.eval().requires_grad_(False)


def arcface_input(gray: np.ndarray) -> torch.Tensor:
    """(1, 128, 128) float tensor in [-1, 1] from a uint8 gray face, as the paper's script prepares it."""
    img = cv2.resize(gray, (128, 128), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return torch.from_numpy((img - 127.5) / 127.5)[None]


def angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two embedding vectors in degrees (0 = same direction).

    Equals ``degrees(arccos(cos_sim))`` but stays accurate near 0 (and is exactly 0 for equal vectors).
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    ua, ub = a / np.linalg.norm(a), b / np.linalg.norm(b)
    return float(np.degrees(2 * np.arctan2(np.linalg.norm(ua - ub), np.linalg.norm(ua + ub))))


@torch.no_grad()
def arcface_distance(net: ArcFaceResNet18, gray_restored: np.ndarray, gray_gt: np.ndarray) -> float:
    """Identity distance in degrees between two uint8 gray faces (lower = same identity)."""
    device = next(net.parameters()).device
    batch = torch.stack([arcface_input(gray_gt), arcface_input(gray_restored)]).to(device)
    emb = net(batch).cpu().numpy()
    return angle_degrees(emb[0], emb[1])

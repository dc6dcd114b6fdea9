"""LPIPS (VGG variant, v0.1) as an evaluation metric: learned perceptual distance; lower is closer.

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018.
The network is :class:`vqfr.nn.perceptual.LPIPS` (shared with the training loss); this module loads
it from the two published files, checked through :mod:`vqfr.metrics.weights`: the torchvision ImageNet
VGG-16 (``vgg16-397923af.pth``) and the LPIPS linear layers (``vgg.pth`` of the lpips package, v0.1).
"""

from __future__ import annotations

import os

from vqfr.metrics.weights import LPIPS_LINEAR, LPIPS_VGG16, fit_state_dict, load_state_dict_file
from vqfr.nn.perceptual import LPIPS, VGG16_WIDTHS, LinearHeads, vgg16_features, vgg16_widths

__all__ = ["LPIPS", "VGG16_WIDTHS", "LinearHeads", "load_lpips", "vgg16_features"]


def load_lpips(linear_path: str | os.PathLike, vgg_path: str | os.PathLike) -> LPIPS:
    """Build LPIPS(VGG) in eval mode from the lpips linear-layer file and the VGG-16 ImageNet file."""
    vgg_state = load_state_dict_file(vgg_path, LPIPS_VGG16)
    features = {k[len("features.") :]: v for k, v in vgg_state.items() if k.startswith("features.")} or vgg_state
    try:
        widths = vgg16_widths(features)
    except KeyError:
        widths = VGG16_WIDTHS  # not a VGG file: fit_state_dict below reports what is wrong
    net = LPIPS(widths)
    fit_state_dict(net.features, features, vgg_path, LPIPS_VGG16)
    lin_state = load_state_dict_file(linear_path, LPIPS_LINEAR)
    fit_state_dict(net.linear, {k: v for k, v in lin_state.items() if k.startswith("lin")}, linear_path, LPIPS_LINEAR)
    return net.eval().requires_grad_(False)

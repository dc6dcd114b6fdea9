"""How each metric of :data:`vqfr.metrics.table.METRICS` scores one pair of images.

Each function here takes the :class:`~vqfr.metrics.evaluation.EvalOptions`, loads what its metric
needs (networks, dlib models) once per process, and returns ``score(images) -> {name: value}``
for a :class:`PairImages`. A ``ValueError`` from a scorer fails the pair with its message (e.g. an
image too small for SSIM's window); a metric that should not fail the pair adds a warning instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vqfr.io.read import quiet_opencv
from vqfr.metrics import weights as W

if TYPE_CHECKING:
    from vqfr.metrics.evaluation import EvalOptions

Score = Callable[["PairImages"], dict[str, float]]


def bgr3(img: np.ndarray) -> np.ndarray:
    """A gray image as 3-channel BGR; colour images unchanged."""
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


def gray(img: np.ndarray) -> np.ndarray:
    """A BGR image as gray; gray images unchanged."""
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


class PairImages:
    """One pair's pixels, as BasicSR reads them (uint8 BGR or gray, both with the same channels),
    and the conversions several metrics share, each made once."""

    def __init__(
        self, restored: np.ndarray, gt: np.ndarray | None, paths: tuple[os.PathLike, os.PathLike | None], options
    ):
        self.restored, self.gt, self.paths, self.options = restored, gt, paths, options
        self.warnings: list[str] = []  # metrics that could not be computed for this pair
        self.fid_features: dict[str, np.ndarray] = {}  # 'restored' / 'gt' Inception pool3 vectors
        self._made: dict = {}

    def _once(self, key, make: Callable):
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def rgb(self, which: str) -> np.ndarray:
        """``which`` ('restored' or 'gt') as contiguous uint8 RGB (gray expanded)."""
        img = self.restored if which == "restored" else self.gt
        return self._once(("rgb", which), lambda: np.ascontiguousarray(bgr3(img)[:, :, ::-1]))

    def tensor(self, which: str):
        """``which`` as an RGB (1, 3, H, W) float tensor in [-1, 1] on the evaluation's device."""
        import torch

        def make():
            rgb = self.rgb(which).astype(np.float32) / 255.0
            return (torch.from_numpy(rgb.transpose(2, 0, 1))[None] * 2 - 1).to(self.options.device)

        return self._once(("tensor", which), make)

    def full_reference(self) -> tuple[np.ndarray, np.ndarray]:
        """(gt, restored) prepared for PSNR/SSIM as --test-y-channel and --correct-mean-var say."""
        from vqfr.metrics.psnr_ssim import psnr_ssim_inputs

        o = self.options
        return self._once("fr", lambda: psnr_ssim_inputs(self.restored, self.gt, o.test_y_channel, o.correct_mean_var))


def psnr_scorer(options: EvalOptions) -> Score:
    from vqfr.metrics.psnr_ssim import calculate_psnr

    return lambda images: {"psnr": calculate_psnr(*images.full_reference(), crop_border=options.crop_border)}


def ssim_scorer(options: EvalOptions) -> Score:
    from vqfr.metrics.psnr_ssim import calculate_ssim

    return lambda images: {"ssim": calculate_ssim(*images.full_reference(), crop_border=options.crop_border)}


def niqe_scorer(options: EvalOptions) -> Score:
    from vqfr.metrics.niqe import calculate_niqe

    def score(images: PairImages) -> dict[str, float]:
        img = images.restored
        try:
            return {"niqe": calculate_niqe(img, options.crop_border, input_order="HW" if img.ndim == 2 else "HWC")}
        except ValueError as err:  # e.g. too small: the other metrics of this pair still count
            images.warnings.append(f"niqe not computed: {err}")
            return {}

    return score


def lpips_scorer(options: EvalOptions) -> Score:
    import torch

    from vqfr.metrics.lpips import load_lpips

    net = load_lpips(options.weight(W.LPIPS_LINEAR), options.weight(W.LPIPS_VGG16)).to(options.device)

    def score(images: PairImages) -> dict[str, float]:
        with torch.no_grad():
            return {"lpips": float(net(images.tensor("restored"), images.tensor("gt"))[0])}

    return score


def fid_scorer(options: EvalOptions) -> Score:
    """Collects each image's Inception features; :func:`vqfr.metrics.evaluation.evaluate` takes FID of the set."""
    import torch

    from vqfr.metrics.inception import load_fid_inception

    net = load_fid_inception(options.weight(W.FID_INCEPTION)).to(options.device)
    # Without a statistics file the ground-truth set is the reference. Also built for --save-fid-stats
    # alone, when only the restored images' features are wanted.
    on_gt = "fid" in options.metrics and options.fid_stats is None

    def score(images: PairImages) -> dict[str, float]:
        with torch.no_grad():
            images.fid_features["restored"] = net(images.tensor("restored"))[0].cpu().numpy()
            if on_gt and images.gt is not None:
                images.fid_features["gt"] = net(images.tensor("gt"))[0].cpu().numpy()
        return {}

    return score


def idd_scorer(options: EvalOptions) -> Score:
    from vqfr.metrics.arcface import arcface_distance, load_arcface

    net = load_arcface(options.weight(W.ARCFACE_R18)).to(options.device)

    def score(images: PairImages) -> dict[str, float]:
        # The paper's script reads faces with cv2's own grayscale decoding.
        with quiet_opencv():
            gray_r, gray_g = (cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in images.paths)
        if gray_r is None or gray_g is None:
            gray_r, gray_g = gray(images.restored), gray(images.gt)
        return {"idd": arcface_distance(net, gray_r, gray_g)}

    return score


def idd_dlib_scorer(options: EvalOptions) -> Score:
    from vqfr.metrics.identity import DlibIdentity

    dlib_identity = DlibIdentity()

    def score(images: PairImages) -> dict[str, float]:
        angle, l2 = dlib_identity.distance(images.rgb("restored"), images.rgb("gt"))
        return {"idd_dlib": angle, "idd_dlib_l2": l2}

    return score


def lmd_dlib_scorer(options: EvalOptions) -> Score:
    from vqfr.metrics.landmarks import DlibLandmarks

    dlib_landmarks = DlibLandmarks()
    return lambda images: {"lmd_dlib": dlib_landmarks.distance(images.rgb("restored"), images.rgb("gt"))}

"""NIQE (Natural Image Quality Evaluator), a no-reference quality score; lower is better.

Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL 2013.
This follows the MATLAB release (96x96 blocks, no overlap, two scales, MATLAB bicubic downsampling)
and reproduces the numbers of BasicSR 1.4.2's ``calculate_niqe``, including its float32 intermediates.
The pristine model (``niqe_pris_params.npz``) holds the published MATLAB parameters; see that file's
``source`` entry.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma

from vqfr.metrics.matlab_resize import imresize
from vqfr.metrics.psnr_ssim import check_crop_border, reorder_image, to_y_channel

PARAMS_PATH = Path(__file__).with_name("niqe_pris_params.npz")
BLOCK = 96


@functools.lru_cache(maxsize=1)
def pristine_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (1, 36), cov (36, 36), gaussian_window (7, 7)) of the pristine natural-image model."""
    with np.load(PARAMS_PATH) as data:
        return data["mu_pris_param"], data["cov_pris_param"], data["gaussian_window"]


@functools.lru_cache(maxsize=1)
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    """Shape grid 0.2..10 (step 0.001) and the ratio r(a) = G(2/a)^2 / (G(1/a) G(3/a)) on it."""
    gam = np.arange(0.2, 10.001, 0.001)
    inv = np.reciprocal(gam)
    r_gam = np.square(gamma(inv * 2)) / (gamma(inv) * gamma(inv * 3))
    return gam, r_gam


def estimate_aggd_param(block: np.ndarray) -> tuple[float, float, float]:
    """Fit an asymmetric generalized Gaussian: (shape alpha, left scale, right scale), by moment matching."""
    block = block.flatten()
    gam, r_gam = _aggd_table()
    left_std = np.sqrt(np.mean(block[block < 0] ** 2))
    right_std = np.sqrt(np.mean(block[block > 0] ** 2))
    gammahat = left_std / right_std
    rhat = (np.mean(np.abs(block))) ** 2 / np.mean(block**2)
    rhatnorm = (rhat * (gammahat**3 + 1) * (gammahat + 1)) / ((gammahat**2 + 1) ** 2)
    alpha = gam[np.argmin((r_gam - rhatnorm) ** 2)]
    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * spread, right_std * spread


def block_features(block: np.ndarray) -> list[float]:
    """The 18 NIQE features of one normalized block: AGGD fit of the block and of 4 neighbour products."""
    alpha, beta_l, beta_r = estimate_aggd_param(block)
    feat = [alpha, (beta_l + beta_r) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):  # horizontal, vertical, two diagonals
        product = block * np.roll(block, shift, axis=(0, 1))
        alpha, beta_l, beta_r = estimate_aggd_param(product)
        mean = (beta_r - beta_l) * (gamma(2 / alpha) / gamma(1 / alpha))
        feat.extend([alpha, mean, beta_l, beta_r])
    return feat


def niqe(img: np.ndarray, mu_pris: np.ndarray, cov_pris: np.ndarray, window: np.ndarray) -> float:
    """NIQE of a float HxW luminance image in 0-255 (already rounded) against a pristine MVG model."""
    if img.ndim != 2:
        raise ValueError(f"NIQE expects an HxW luminance image, got shape {img.shape}")
    h, w = img.shape
    n_h, n_w = h // BLOCK, w // BLOCK
    if n_h * n_w < 2:  # one block gives no covariance
        raise ValueError(f"NIQE needs at least two {BLOCK}x{BLOCK} blocks (e.g. {2 * BLOCK}x{BLOCK}), got {w}x{h}")
    img = img[: n_h * BLOCK, : n_w * BLOCK]

    per_scale = []
    for scale in (1, 2):
        mu = convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(np.square(img), window, mode="nearest") - np.square(mu)))
        normalized = (img - mu) / (sigma + 1)  # local mean subtraction and contrast normalization
        size = BLOCK // scale
        feats = [
            block_features(normalized[bh * size : (bh + 1) * size, bw * size : (bw + 1) * size])
            for bw in range(n_w)
            for bh in range(n_h)
        ]
        per_scale.append(np.array(feats))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5, antialiasing=True) * 255.0

    dist = np.concatenate(per_scale, axis=1)
    mu_dist = np.nanmean(dist, axis=0)
    cov_dist = np.cov(dist[~np.isnan(dist).any(axis=1)], rowvar=False)
    inv_cov = np.linalg.pinv((cov_pris + cov_dist) / 2)
    diff = mu_pris - mu_dist
    quality = np.sqrt(np.matmul(np.matmul(diff, inv_cov), np.transpose(diff)))
    return float(np.squeeze(quality))


def calculate_niqe(
    img: np.ndarray, crop_border: int, input_order: str = "HWC", convert_to: str = "y", **kwargs
) -> float:
    """NIQE of a 0-255 image (BGR if colour, as from ``cv2.imread``); lower means more natural.

    ``input_order`` is 'HW', 'HWC' or 'CHW'; colour images are reduced to MATLAB's Y
    (``convert_to='y'``) or OpenCV gray (``convert_to='gray'``) and rounded, as MATLAB does.
    """
    if convert_to not in ("y", "gray"):
        raise ValueError(f"convert_to must be 'y' or 'gray', not {convert_to!r}")
    mu_pris, cov_pris, window = pristine_params()
    img = img.astype(np.float32)
    if input_order != "HW":
        img = reorder_image(img, input_order=input_order)
        if convert_to == "y":
            img = to_y_channel(img)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img / 255.0, cv2.COLOR_BGR2GRAY) * 255.0
        if img.ndim == 3:  # HxWx1; not np.squeeze, which would also drop a 1-pixel height or width
            img = img[..., 0]
    check_crop_border(img.shape[:2], crop_border)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    img = img.round()
    return niqe(img, mu_pris, cov_pris, window)

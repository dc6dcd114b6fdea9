"""PSNR and SSIM with BasicSR's conventions, so numbers are comparable with published tables.

Conventions (identical to ``basicsr.metrics`` 1.4.2):

* images are numpy arrays in the 0-255 range (uint8 or float), 'HWC' or 'CHW', or plain HxW;
* colour images are **BGR**, as returned by ``cv2.imread`` -- this only matters for
  ``test_y_channel=True``, where the MATLAB ``rgb2ycbcr`` Y weights are applied in BGR order;
* the Y channel is computed in float32 on [0, 1] and scaled back to 0-255 without rounding;
* the metric itself is computed in float64; SSIM uses an 11x11 Gaussian window (sigma 1.5),
  'valid' borders, K1=0.01, K2=0.03, and is averaged over channels.
"""

from __future__ import annotations

import cv2
import numpy as np

# ITU-R BT.601 luma weights of MATLAB's rgb2ycbcr, listed for B, G, R (images are BGR).
_Y_WEIGHTS_BGR = (24.966, 128.553, 65.481)


def reorder_image(img: np.ndarray, input_order: str = "HWC") -> np.ndarray:
    """Return ``img`` as HxWxC (a 2-D image gets a trailing channel axis)."""
    if input_order not in ("HWC", "CHW"):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', not {input_order!r}")
    if img.ndim == 2:
        img = img[..., None]
    if input_order == "CHW":
        img = img.transpose(1, 2, 0)
    return img


def bgr2y(img: np.ndarray) -> np.ndarray:
    """MATLAB-style Y (16-235 scaled to [0, 1]) of a float32 BGR image in [0, 1]; float32, HxW."""
    y = np.dot(img.astype(np.float32), np.array(_Y_WEIGHTS_BGR, dtype=np.float64)) + 16.0
    return (y / 255.0).astype(np.float32)


def to_y_channel(img: np.ndarray) -> np.ndarray:
    """Y channel of a BGR 0-255 image as float32 0-255 (not rounded), HxWx1; gray images pass through."""
    img = img.astype(np.float32) / 255.0
    if img.ndim == 3 and img.shape[2] == 3:
        img = bgr2y(img)[..., None]
    return img * 255.0


def check_crop_border(shape_hw: tuple[int, int], crop_border: int) -> None:
    """Raise ValueError when cropping ``crop_border`` pixels at each edge leaves no pixel of an HxW image."""
    h, w = shape_hw
    if crop_border < 0:
        raise ValueError(f"crop border must be >= 0, got {crop_border}")
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop border {crop_border} leaves nothing of a {w}x{h} image")


def _prepare(img, img2, crop_border: int, input_order: str, test_y_channel: bool):
    if img.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {img2.shape}")
    img = reorder_image(img, input_order)
    img2 = reorder_image(img2, input_order)
    check_crop_border(img.shape[:2], crop_border)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]
    if test_y_channel:
        img = to_y_channel(img)
        img2 = to_y_channel(img2)
    return img.astype(np.float64), img2.astype(np.float64)


def calculate_psnr(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int,
    input_order: str = "HWC",
    test_y_channel: bool = False,
    **kwargs,
) -> float:
    """PSNR in dB between two 0-255 images (``inf`` when they are identical)."""
    img, img2 = _prepare(img, img2, crop_border, input_order, test_y_channel)
    mse = np.mean((img - img2) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


def _gaussian_window() -> np.ndarray:
    kernel = cv2.getGaussianKernel(11, 1.5)
    return np.outer(kernel, kernel.transpose())


def ssim_single_channel(img: np.ndarray, img2: np.ndarray) -> float:
    """Mean SSIM of two float64 HxW images in 0-255 over all fully-inside 11x11 windows."""
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    window = _gaussian_window()

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]  # keep 'valid' positions only

    mu1, mu2 = blur(img), blur(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = blur(img**2) - mu1_sq
    sigma2_sq = blur(img2**2) - mu2_sq
    sigma12 = blur(img * img2) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def calculate_ssim(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int,
    input_order: str = "HWC",
    test_y_channel: bool = False,
    **kwargs,
) -> float:
    """SSIM between two 0-255 images, computed per channel and averaged (MATLAB reference numbers)."""
    img, img2 = _prepare(img, img2, crop_border, input_order, test_y_channel)
    if min(img.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {img.shape[1]}x{img.shape[0]}")
    return float(np.mean([ssim_single_channel(img[..., i], img2[..., i]) for i in range(img.shape[2])]))


def correct_mean_var(restored: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Match each channel's mean and standard deviation of ``restored`` to ``gt``.

    This is the optional step of the VQFR paper's PSNR/SSIM script (``--correct_mean_var``):
    both images are float32 in [0, 1], HxWxC; the shift-then-scale correction is applied twice
    per channel, in float32. Returns a new float32 array; the inputs are not modified.
    """
    if restored.shape != gt.shape:
        raise ValueError(f"image shapes differ: {restored.shape} vs {gt.shape}")
    out = restored.astype(np.float32, copy=True)
    gt = gt.astype(np.float32, copy=False)
    if out.ndim == 2:
        out, gt = out[..., None], gt[..., None]
    for c in range(out.shape[2]):
        target_mean = np.mean(gt[:, :, c])
        target_std = np.std(gt[:, :, c])
        for _ in range(2):
            out[:, :, c] = out[:, :, c] - np.mean(out[:, :, c]) + target_mean
            out[:, :, c] = out[:, :, c] / np.std(out[:, :, c]) * target_std
    return out.reshape(restored.shape)


def psnr_ssim_inputs(
    restored: np.ndarray, gt: np.ndarray, test_y_channel: bool = False, mean_var_correction: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(gt, restored) as float32 0-255 arrays, prepared the way the paper's PSNR/SSIM script does.

    The uint8 BGR images go to float32 [0, 1], the restored one optionally through
    :func:`correct_mean_var`, both optionally to the MATLAB Y channel, and back to 0-255.
    """
    if restored.shape != gt.shape:
        raise ValueError(f"image shapes differ: {restored.shape} vs {gt.shape}")
    gt_f = gt.astype(np.float32) / 255.0
    res_f = restored.astype(np.float32) / 255.0
    if mean_var_correction:
        res_f = correct_mean_var(res_f, gt_f)
    if test_y_channel and gt_f.ndim == 3 and gt_f.shape[2] == 3:
        gt_f, res_f = bgr2y(gt_f), bgr2y(res_f)
    return gt_f * 255.0, res_f * 255.0


def psnr_ssim_pair(
    restored: np.ndarray,
    gt: np.ndarray,
    crop_border: int = 0,
    test_y_channel: bool = False,
    mean_var_correction: bool = False,
) -> tuple[float, float]:
    """(PSNR, SSIM) of two uint8 BGR images the way the paper's script computes them.

    :func:`calculate_psnr` / :func:`calculate_ssim` of :func:`psnr_ssim_inputs`. Without the
    correction this equals calling the two functions on the uint8 images directly.
    """
    ref, res = psnr_ssim_inputs(restored, gt, test_y_channel, mean_var_correction)
    psnr = calculate_psnr(ref, res, crop_border=crop_border)
    ssim = calculate_ssim(ref, res, crop_border=crop_border)
    return psnr, ssim

"""PSNR/SSIM: hand-checkable cases, a direct SSIM formula, and BasicSR 1.4.2's numbers on real faces."""

import cv2
import numpy as np
import pytest
from conftest import ALIGNED_FACES, needs_shared_data

from vqfr.metrics import calculate_psnr, calculate_ssim, correct_mean_var, psnr_ssim_pair, to_y_channel


def _rng():
    return np.random.default_rng(0)


def test_identical_images():
    img = _rng().integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert calculate_psnr(img, img, 0) == float("inf")
    assert calculate_ssim(img, img, 0) == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_a_constant_offset_is_closed_form():
    img = _rng().integers(0, 240, (20, 24, 3)).astype(np.uint8)
    shifted = img + np.uint8(10)  # every pixel off by 10: MSE = 100
    assert calculate_psnr(img, shifted, 0) == pytest.approx(10 * np.log10(255**2 / 100), abs=1e-12)


def test_psnr_counts_only_the_uncropped_interior():
    a = np.zeros((16, 16), np.uint8)
    b = a.copy()
    b[0, :] = 255  # damage only the border row
    assert calculate_psnr(a, b, crop_border=1) == float("inf")
    assert calculate_psnr(a, b, crop_border=0) == pytest.approx(10 * np.log10(16), abs=1e-12)


def test_chw_and_hwc_agree():
    a = _rng().integers(0, 256, (3, 24, 20), dtype=np.uint8)
    b = _rng().integers(0, 256, (3, 24, 20), dtype=np.uint8)
    hwc = (a.transpose(1, 2, 0), b.transpose(1, 2, 0))
    assert calculate_psnr(a, b, 0, input_order="CHW") == calculate_psnr(*hwc, 0)
    assert calculate_ssim(a, b, 0, input_order="CHW") == calculate_ssim(*hwc, 0)


def test_y_channel_uses_matlab_weights_in_bgr_order():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in BGR
    y = to_y_channel(bgr)
    assert y.shape == (2, 2, 1)
    assert y[0, 0, 0] == pytest.approx(65.481 + 16.0, abs=1e-4)  # red weight, not blue's 24.966


def _direct_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM by the definition: Gaussian-weighted statistics of every fully-inside 11x11 window."""
    g = cv2.getGaussianKernel(11, 1.5)
    w = g @ g.T
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * (px - mx) ** 2).sum()
            vy = (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_the_direct_formula_on_small_arrays():
    rng = _rng()
    x = rng.integers(0, 256, (16, 18)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 25, x.shape), 0, 255)
    assert calculate_ssim(x, y, 0) == pytest.approx(_direct_ssim(x, y), abs=1e-10)
    # colour: mean of per-channel SSIMs
    xc = rng.integers(0, 256, (14, 15, 3)).astype(np.float64)
    yc = np.clip(xc + rng.normal(0, 40, xc.shape), 0, 255)
    expected = np.mean([_direct_ssim(xc[..., c], yc[..., c]) for c in range(3)])
    assert calculate_ssim(xc, yc, 0) == pytest.approx(expected, abs=1e-10)


def test_more_noise_means_lower_scores():
    rng = _rng()
    img = rng.integers(30, 220, (48, 48, 3)).astype(np.uint8)
    noisy = [np.clip(img + rng.normal(0, s, img.shape), 0, 255).astype(np.uint8) for s in (2, 8, 20)]
    psnrs = [calculate_psnr(img, n, 0) for n in noisy]
    ssims = [calculate_ssim(img, n, 0) for n in noisy]
    assert psnrs == sorted(psnrs, reverse=True) and ssims == sorted(ssims, reverse=True)


def test_shape_mismatch_and_bad_order_raise():
    a, b = np.zeros((8, 8, 3)), np.zeros((8, 9, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_psnr(a, b, 0)
    with pytest.raises(ValueError, match="input_order"):
        calculate_ssim(a, a, 0, input_order="WHC")


def test_mean_var_correction_undoes_a_per_channel_affine_change():
    rng = _rng()
    gt = rng.random((32, 32, 3)).astype(np.float32)
    off = gt * np.array([0.5, 1.3, 0.8], np.float32) + np.array([0.2, -0.1, 0.05], np.float32)
    fixed = correct_mean_var(off, gt)
    assert np.abs(fixed - gt).max() < 1e-5
    assert np.array_equal(off, gt * np.array([0.5, 1.3, 0.8], np.float32) + np.array([0.2, -0.1, 0.05], np.float32))


# BasicSR 1.4.2 (basicsr.metrics.calculate_psnr / calculate_ssim and its calculate_psnr_ssim.py with
# --correct_mean_var), run on these two files: restored = Julia_Roberts_crop, gt = Adele_crop.
BASICSR = {
    # (test_y_channel, crop_border, correct_mean_var): (psnr, ssim)
    (False, 0, False): (10.467559267167442, 0.47623569576132935),
    (False, 4, False): (10.53002920201189, 0.4764353607826366),
    (True, 0, False): (11.737157034063433, 0.5512610282312812),
    (True, 4, False): (11.809107887631065, 0.5514506158536246),
    (False, 0, True): (13.957591327336075, 0.579080932614651),
    (True, 0, True): (15.185514226250852, 0.6423766369642957),
}


@needs_shared_data
@pytest.mark.parametrize("key", list(BASICSR))
def test_matches_basicsr_on_real_faces(key):
    y, crop, cmv = key
    gt = cv2.imread(str(ALIGNED_FACES / "Adele_crop.png"))
    restored = cv2.imread(str(ALIGNED_FACES / "Julia_Roberts_crop.png"))
    psnr, ssim = psnr_ssim_pair(restored, gt, crop, y, cmv)
    # Measured spread between two x86-64 machines: 0. The tolerances still allow for other CPUs: the
    # Y conversion and the mean/variance correction are float32 and numpy/OpenCV pick SIMD reduction
    # orders per CPU (last-bit changes that move PSNR by ~1e-7 dB at most); 1e-5 dB / 1e-6 SSIM is far
    # below any difference between methods and far above float64 rounding.
    assert psnr == pytest.approx(BASICSR[key][0], abs=1e-5)
    assert ssim == pytest.approx(BASICSR[key][1], abs=1e-6)
    if not cmv:
        assert calculate_psnr(restored, gt, crop, test_y_channel=y) == psnr
        assert calculate_ssim(restored, gt, crop, test_y_channel=y) == ssim

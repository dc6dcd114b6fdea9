"""The degradation model: seeded reproducibility, the stated parameter ranges, and its effect."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vqfr.data.degradations import DegradationConfig, degrade, gaussian_kernel, random_blur_kernel, sample_rng
from vqfr.errors import VQFRError


def _face(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.4 * np.sin(9 * xx), 0.5 + 0.4 * np.cos(7 * yy), 0.5 + 0.3 * np.sin(5 * (xx + yy))], 2)
    return img.astype(np.float32)


def test_same_seed_same_image_other_seed_differs():
    cfg = DegradationConfig()
    img = _face()
    a = degrade(img, cfg, sample_rng(7, 3))
    b = degrade(img, cfg, sample_rng(7, 3))
    c = degrade(img, cfg, sample_rng(7, 4))
    assert a.shape == img.shape and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.allclose(a * 255, np.rint(a * 255), atol=1e-3)  # 8-bit quantised, like a saved image


def test_parameters_span_the_published_ranges():
    cfg = DegradationConfig()  # kernel 41, sigma 1-15, down 1-30, noise 0-20, jpeg 30-90
    img = _face(32)
    draws = [degrade(img, cfg, sample_rng(0, i), return_params=True)[1] for i in range(300)]
    kinds = {d["kernel"] for d in draws}
    assert kinds == {"iso", "aniso"}
    iso = sum(d["kernel"] == "iso" for d in draws) / len(draws)
    assert 0.4 < iso < 0.6
    sig = np.array([d["sigma_x"] for d in draws] + [d["sigma_y"] for d in draws])
    assert sig.min() >= 1 and sig.max() <= 15 and sig.min() < 2 and sig.max() > 14
    scale = np.array([d["scale"] for d in draws])
    assert scale.min() >= 1 and scale.max() <= 30 and scale.min() < 2 and scale.max() > 28
    noise = np.array([d["noise_sigma"] for d in draws])
    assert noise.min() >= 0 and noise.max() <= 20 and noise.min() < 1 and noise.max() > 19
    q = np.array([d["jpeg_quality"] for d in draws])
    assert q.min() >= 30 and q.max() <= 90 and q.min() <= 32 and q.max() >= 88
    assert all(d["sigma_x"] == d["sigma_y"] for d in draws if d["kernel"] == "iso")


def test_kernel_is_normalised_oriented_gaussian():
    k = gaussian_kernel(41, 3.0, 3.0, 0.0)
    assert k.shape == (41, 41) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-5)
    assert np.allclose(k, k.T, atol=1e-7) and k.argmax() == 20 * 41 + 20
    # anisotropic: wide along x when theta = 0, along y when theta = pi/2
    kx = gaussian_kernel(41, 6.0, 1.0, 0.0)
    ky = gaussian_kernel(41, 6.0, 1.0, math.pi / 2)
    assert kx[20, 30] > kx[30, 20] and ky[30, 20] > ky[20, 30]
    _, params = random_blur_kernel(DegradationConfig(kernel_list=("aniso",), kernel_prob=(1.0,)), sample_rng(1))
    assert params["kernel"] == "aniso"


def test_degradation_strength_follows_the_ranges():
    img = _face(64)
    mild = DegradationConfig(
        blur_sigma=(1, 1.01), downsample_range=(1, 1.01), noise_range=(0, 0.01), jpeg_range=(90, 90)
    )
    harsh = DegradationConfig(
        blur_sigma=(8, 8.01), downsample_range=(8, 8.01), noise_range=(20, 20), jpeg_range=(30, 30)
    )
    err_mild = np.abs(degrade(img, mild, sample_rng(0)) - img).mean()
    err_harsh = np.abs(degrade(img, harsh, sample_rng(0)) - img).mean()
    assert err_mild < 0.03 < err_harsh


def test_colour_jitter_and_gray():
    img = _face(32)
    gray = degrade(img, DegradationConfig(gray_prob=1.0), sample_rng(0))
    assert np.allclose(gray[..., 0], gray[..., 1]) and np.allclose(gray[..., 1], gray[..., 2])
    out, params = degrade(img, DegradationConfig(color_jitter_prob=1.0), sample_rng(0), return_params=True)
    assert len(params["color_shift"]) == 3 and max(abs(s) for s in params["color_shift"]) <= 20 / 255


@pytest.mark.parametrize(
    "bad",
    [
        {"kernel_size": 40},
        {"blur_sigma": [5, 1]},
        {"jpeg_range": [0, 200]},
        {"kernel_list": ["iso", "box"], "kernel_prob": [0.5, 0.5]},
        {"kernel_prob": [1.0]},
        {"typo_range": [1, 2]},
        {"blur_sigma": [float("nan"), 3]},
        {"blur_sigma": [1, float("inf")]},
        {"downsample_range": [1, float("nan")]},
        {"downsample_range": [0, 4]},
        {"noise_range": [-5, 3]},
        {"noise_range": [0, float("inf")]},
        {"jpeg_range": [30, float("nan")]},
        {"blur_sigma": ["abc", 3]},
        {"blur_sigma": 3},
        {"kernel_prob": [-1.0, 2.0]},
        {"gray_prob": 1.5},
        {"color_jitter_shift": float("nan")},
    ],
)
def test_bad_options_are_one_line_errors(bad):
    with pytest.raises(VQFRError) as err:
        DegradationConfig.from_dict(bad)
    assert "\n" not in str(err.value)


def test_published_ranges_still_accepted():
    # VQFRv1's recipe downsamples from 0.8 (a slight upscale), so scales below 1 stay valid
    cfg = DegradationConfig.from_dict({"blur_sigma": [0.1, 10], "downsample_range": [0.8, 8], "noise_range": [0, 20]})
    out = degrade(_face(), cfg, sample_rng(0, 1))
    assert out.shape == (64, 64, 3) and np.isfinite(out).all()

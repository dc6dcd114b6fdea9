"""The synthetic degradation model used to train and test blind face restoration.

``y = JPEG_q( (k * x) downsample_s + n_sigma ) upsample_s``: a random isotropic or
anisotropic Gaussian blur, a random downsampling, Gaussian noise and JPEG
compression, then a resize back to the input size. Optional colour jitter and
grayscale conversion of the degraded image.

Every random draw comes from the ``numpy.random.Generator`` passed in, so the
same seed always gives the same degraded image (workers, processes and resumes
included). Images are float32 RGB arrays in [0, 1], shape (H, W, 3).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from vqfr.errors import VQFRError


@dataclass
class DegradationConfig:
    """Ranges of the degradation model; defaults are the published VQFRv2 recipe."""

    kernel_size: int = 41
    kernel_list: tuple[str, ...] = ("iso", "aniso")
    kernel_prob: tuple[float, ...] = (0.5, 0.5)
    blur_sigma: tuple[float, float] = (1.0, 15.0)
    downsample_range: tuple[float, float] = (1.0, 30.0)
    noise_range: tuple[float, float] | None = (0.0, 20.0)  # sigma on the 0-255 scale
    jpeg_range: tuple[int, int] | None = (30, 90)
    color_jitter_prob: float = 0.0  # probability of a per-channel shift
    color_jitter_shift: float = 20.0  # max shift on the 0-255 scale
    gray_prob: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int):
            raise VQFRError(f"degradation kernel_size must be an odd integer >= 3, got {self.kernel_size!r}")
        if self.kernel_size % 2 != 1 or self.kernel_size < 3:
            raise VQFRError(f"degradation kernel_size must be odd and >= 3, got {self.kernel_size}")
        if isinstance(self.kernel_list, str) or not isinstance(self.kernel_list, (list, tuple)):
            raise VQFRError("degradation kernel_list must be a list such as [iso, aniso]")
        self.kernel_list = tuple(self.kernel_list)
        self.kernel_prob = tuple(_number("kernel_prob", p) for p in _sequence("kernel_prob", self.kernel_prob))
        if len(self.kernel_list) != len(self.kernel_prob) or not self.kernel_list:
            raise VQFRError("degradation kernel_list and kernel_prob must have the same, non-zero length")
        if any(p < 0 for p in self.kernel_prob) or sum(self.kernel_prob) <= 0:
            raise VQFRError("degradation kernel_prob must be non-negative with a positive sum")
        unknown = set(self.kernel_list) - {"iso", "aniso"}
        if unknown:
            raise VQFRError(f"unknown blur kernel type(s) {sorted(unknown)}; use 'iso' and/or 'aniso'")
        for name in ("blur_sigma", "downsample_range", "noise_range", "jpeg_range"):
            value = getattr(self, name)
            if value is None:
                continue
            value = _sequence(name, value)
            if len(value) != 2:
                raise VQFRError(f"degradation {name} must be [low, high], got {list(value)}")
            lo, hi = _number(name, value[0]), _number(name, value[1])
            if lo > hi:
                raise VQFRError(f"degradation {name} must be [low, high] with low <= high, got {list(value)}")
            setattr(self, name, (value[0], value[1]))
        if self.blur_sigma is None or float(self.blur_sigma[0]) <= 0:
            raise VQFRError("degradation blur_sigma must be positive")
        # Scales below 1 are legitimate: the VQFRv1 recipe draws from [0.8, 8].
        if self.downsample_range is None or float(self.downsample_range[0]) <= 0:
            raise VQFRError("degradation downsample_range must be positive")
        if self.noise_range is not None and float(self.noise_range[0]) < 0:
            raise VQFRError("degradation noise_range must be >= 0")
        if self.jpeg_range is not None and not (1 <= float(self.jpeg_range[0]) <= float(self.jpeg_range[1]) <= 100):
            raise VQFRError("degradation jpeg_range must lie in [1, 100]")
        for name, top in (("color_jitter_prob", 1.0), ("color_jitter_shift", 255.0), ("gray_prob", 1.0)):
            value = _number(name, getattr(self, name))
            if not 0 <= value <= top:
                raise VQFRError(f"degradation {name} must lie in [0, {top:g}], got {value}")
            setattr(self, name, value)

    @classmethod
    def from_dict(cls, d: dict | None) -> DegradationConfig:
        """Build from a config mapping; unknown keys are an error (typos must not pass silently)."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise VQFRError(f"unknown degradation option(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _sequence(name: str, value) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise VQFRError(f"degradation {name} must be a list of numbers, got {value!r}")
    return tuple(value)


def _number(name: str, value) -> float:
    """``value`` as a finite float, or a one-line error naming the option."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise VQFRError(f"degradation {name} must hold numbers, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(out):
        raise VQFRError(f"degradation {name} must hold finite numbers, got {value!r}")
    return out


# ---------------------------------------------------------------- blur kernels


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """A normalised 2-D Gaussian kernel with axis std devs (sigma_x, sigma_y) rotated by ``theta``."""
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    quad = inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy
    k = np.exp(-0.5 * quad)
    return (k / k.sum()).astype(np.float32)


def random_blur_kernel(cfg: DegradationConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Draw a kernel type by ``kernel_prob`` and its parameters; return the kernel and what was drawn."""
    probs = np.asarray(cfg.kernel_prob, dtype=np.float64)
    kind = cfg.kernel_list[int(rng.choice(len(probs), p=probs / probs.sum()))]
    lo, hi = cfg.blur_sigma
    sx = float(rng.uniform(lo, hi))
    if kind == "iso":
        sy, theta = sx, 0.0
    else:
        sy = float(rng.uniform(lo, hi))
        theta = float(rng.uniform(-math.pi, math.pi))
    return gaussian_kernel(cfg.kernel_size, sx, sy, theta), {
        "kernel": kind,
        "sigma_x": sx,
        "sigma_y": sy,
        "theta": theta,
    }


# ---------------------------------------------------------------- the model


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode/decode a float RGB image as JPEG at ``quality`` (OpenCV's encoder, 4:2:0)."""
    u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise VQFRError("JPEG encoding failed during degradation")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0


def degrade(
    img: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Degrade a float32 RGB image in [0, 1]; the result has the same size, quantised to 8 bits.

    With ``return_params`` also return the dict of drawn parameters (for logs and tests).
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise VQFRError(f"degrade expects an (H, W, 3) RGB image, got shape {img.shape}")
    h, w = img.shape[:2]
    img = np.ascontiguousarray(img, dtype=np.float32)

    kernel, params = random_blur_kernel(cfg, rng)
    out = cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)

    scale = float(rng.uniform(*cfg.downsample_range))
    params["scale"] = scale
    small = (max(1, int(w // scale)), max(1, int(h // scale)))
    out = cv2.resize(out, small, interpolation=cv2.INTER_LINEAR)

    if cfg.noise_range is not None:
        sigma = float(rng.uniform(*cfg.noise_range))
        params["noise_sigma"] = sigma
        out = np.clip(out + rng.standard_normal(out.shape).astype(np.float32) * (sigma / 255.0), 0, 1)

    if cfg.jpeg_range is not None:
        quality = int(rng.integers(int(cfg.jpeg_range[0]), int(cfg.jpeg_range[1]) + 1))
        params["jpeg_quality"] = quality
        out = jpeg_roundtrip(out, quality)

    out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)

    if cfg.color_jitter_prob > 0 and rng.uniform() < cfg.color_jitter_prob:
        shift = rng.uniform(-cfg.color_jitter_shift, cfg.color_jitter_shift, 3).astype(np.float32) / 255.0
        params["color_shift"] = shift.tolist()
        out = out + shift
    if cfg.gray_prob > 0 and rng.uniform() < cfg.gray_prob:
        params["gray"] = True
        gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        out = np.repeat(gray[:, :, None], 3, axis=2)

    out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.float32) / 255.0
    return (out, params) if return_params else out


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by ``seed`` and integer keys (e.g. epoch, sample index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(k) for k in keys]]))

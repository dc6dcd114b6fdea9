"""Reading, writing and converting face images for training (RGB, float32 in [0, 1])."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from vqfr.errors import VQFRError
from vqfr.io import IMAGE_EXTENSIONS
from vqfr.io.read import png_data_problem, quiet_opencv
from vqfr.utils.atomic import atomic_write_bytes
from vqfr.utils.image_tensor import tensor_to_uint8


def list_image_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder`` (hidden files skipped); a clear error if there are none."""
    folder = Path(folder)
    if not folder.exists():
        raise VQFRError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise VQFRError(f"{folder} is not a folder (give a folder of images)")
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise VQFRError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    return files


def decode_rgb_float(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to float32 RGB in [0, 1] (grayscale expanded, alpha dropped)."""
    if not data:
        raise VQFRError(f"cannot decode image {name}: the file is empty")
    problem = png_data_problem(data)
    if problem:
        raise VQFRError(f"cannot decode image {name}: truncated or corrupt ({problem})")
    try:
        with quiet_opencv():
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # OpenCV asserts on some malformed buffers instead of returning None
        arr = None
    if arr is None or arr.size == 0:
        raise VQFRError(f"cannot decode image {name}: not a readable image")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    return np.ascontiguousarray(arr[:, :, ::-1], dtype=np.float32) / scale


def read_rgb_float(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 RGB in [0, 1]."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise VQFRError(f"cannot read image {path}: {err.strerror or err}") from None
    return decode_rgb_float(data, str(path))


def encode_png(img: np.ndarray) -> bytes:
    """Encode float RGB [0, 1] (or uint8 RGB) as PNG bytes."""
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
    if not ok:
        raise VQFRError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an RGB image as PNG atomically."""
    atomic_write_bytes(path, encode_png(img))


def resize_square_float(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (area filter when shrinking, bicubic when enlarging)."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return np.clip(cv2.resize(img, (size, size), interpolation=interp), 0.0, 1.0)


def to_tensor(img: np.ndarray):
    """(H, W, 3) float RGB [0, 1] -> (3, H, W) float tensor in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().mul_(2.0).sub_(1.0)


def to_image(t) -> np.ndarray:
    """(3, H, W) tensor in [-1, 1] -> (H, W, 3) uint8 RGB."""
    return tensor_to_uint8(t)

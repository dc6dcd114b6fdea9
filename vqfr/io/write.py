"""Write images atomically, format chosen by the file extension."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from vqfr.errors import VQFRError
from vqfr.utils.atomic import atomic_write_bytes
from vqfr.utils.paths import shown

# extension -> (OpenCV encoder extension, keeps 16 bit, keeps alpha)
_FORMATS = {
    ".png": (".png", True, True),
    ".jpg": (".jpg", False, False),
    ".jpeg": (".jpg", False, False),
    ".webp": (".webp", False, True),
    ".bmp": (".bmp", False, True),
    ".tif": (".tiff", True, True),
    ".tiff": (".tiff", True, True),
}


def supports_alpha(path: str | os.PathLike) -> bool:
    """True when the format chosen by ``path``'s extension can store an alpha channel."""
    return _format(Path(path))[2]


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 with rounding; uint8 passes through."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise VQFRError(f"cannot convert {arr.dtype} pixels to 8 bit")


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> Path:
    """Encode ``image`` (gray ``(H, W)``, RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)``; uint8/uint16), atomically.

    16-bit data is reduced to 8 bit for formats that cannot hold it; alpha is dropped for JPEG
    (callers that care check :func:`supports_alpha` first).
    """
    path = Path(path)
    data = encode_image(path, image, quality)
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise VQFRError(f"{shown(path)}: cannot write ({err.strerror or err})") from None
    return path


def encode_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> bytes:
    """The file contents :func:`write_image` would write to ``path`` (format from its extension)."""
    path = Path(path)
    ext, keeps_16bit, keeps_alpha = _format(path)
    if image.dtype not in (np.uint8, np.uint16):
        raise VQFRError(f"{shown(path)}: cannot write {image.dtype} pixels (expected uint8 or uint16)")
    if image.ndim == 3 and image.shape[2] == 4 and not keeps_alpha:
        image = image[..., :3]
    if image.dtype == np.uint16 and not keeps_16bit:
        image = to_uint8(image)
    if image.ndim == 3:
        code = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}.get(image.shape[2])
        if code is None:
            raise VQFRError(f"{shown(path)}: cannot write an image with {image.shape[2]} channels")
        image = cv2.cvtColor(np.ascontiguousarray(image), code)
    params: list[int] = []
    if ext == ".jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image), params)
    if not ok:
        raise VQFRError(f"{shown(path)}: the {ext} encoder failed")
    return buf.tobytes()


def _format(path: Path) -> tuple[str, bool, bool]:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted({k.lstrip(".") for k in _FORMATS}))
        raise VQFRError(f"{shown(path)}: unknown image extension {path.suffix!r} (use one of: {known})")
    return fmt

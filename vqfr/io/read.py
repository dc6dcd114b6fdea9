"""Read the images people really have into one predictable array layout.

Every decoder quirk is handled here so the rest of the package sees only:
RGB (or gray) pixels as ``uint8`` or ``uint16``, an optional alpha plane, EXIF
orientation already applied. Anything unreadable becomes a one-line
:class:`~vqfr.errors.VQFRError`; the pixel count is checked from the header
before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from vqfr.errors import VQFRError

# 100 megapixels: a 12 MP phone photo upscaled 2x (48 MP) passes, a 20000x20000 bomb does not.
DEFAULT_MAX_PIXELS = 100_000_000

# Extensions picked up when a folder is scanned (lower case, with the dot).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

_EXIF_ORIENTATION = 0x0112


@dataclass
class LoadedImage:
    """A decoded image.

    ``pixels`` is ``(H, W, 3)`` RGB, or ``(H, W)`` when the source was gray; ``alpha`` is ``(H, W)`` or None.
    Both are ``uint8`` or ``uint16`` (16-bit PNG/TIFF keep their depth).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    format: str

    @property
    def is_gray(self) -> bool:
        return self.pixels.ndim == 2

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.pixels.shape[1], self.pixels.shape[0]

    def to_array(self) -> np.ndarray:
        """Pixels with alpha appended as a last channel (gray+alpha becomes RGBA)."""
        if self.alpha is None:
            return self.pixels
        rgb = np.repeat(self.pixels[..., None], 3, axis=2) if self.is_gray else self.pixels
        return np.concatenate([rgb, self.alpha[..., None]], axis=2)


def check_pixel_limit(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    """Refuse sizes above ``max_pixels`` (None disables the check) with a message saying how to proceed."""
    if max_pixels is not None and width * height > max_pixels:
        raise VQFRError(
            f"{what} is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
            f"{max_pixels / 1e6:.1f} megapixels (raise it with --max-pixels if you trust the file)"
        )


def read_image(source: str | os.PathLike | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode a JPEG/PNG/WebP/BMP/TIFF file (path or bytes) into a :class:`LoadedImage`."""
    name = "image" if isinstance(source, bytes) else str(source)
    data = source if isinstance(source, bytes) else _read_bytes(Path(source))
    try:
        with _own_size_limit():  # our limit is checked below, with a message that says what to do
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise VQFRError(f"{name}: not an image, or a format that cannot be read") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise VQFRError(f"{name}: cannot read image header ({err})") from None
    width, height = im.size
    if width < 1 or height < 1:
        raise VQFRError(f"{name}: image has no pixels ({width}x{height})")
    check_pixel_limit(width, height, max_pixels, what=name)
    fmt = (im.format or "unknown").upper()
    problem = png_data_problem(data) if fmt == "PNG" else None
    if problem:  # Pillow would pad missing rows with black instead of failing
        raise VQFRError(f"{name}: corrupt or truncated image ({problem})")
    orientation = _orientation(im)
    try:
        if _is_16bit_color(im, data):
            pixels, alpha = _decode_16bit_color(data, name)
        else:
            pixels, alpha = _decode_pillow(im)
    except VQFRError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        msg = str(err).strip().rstrip(".") or type(err).__name__
        raise VQFRError(f"{name}: corrupt or truncated image ({msg})") from None
    if orientation > 1:
        pixels = apply_orientation(pixels, orientation)
        alpha = None if alpha is None else apply_orientation(alpha, orientation)
    return LoadedImage(np.ascontiguousarray(pixels), None if alpha is None else np.ascontiguousarray(alpha), fmt)


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored image upright according to its EXIF orientation tag (1..8)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return np.swapaxes(arr, 0, 1)
    if orientation == 6:
        return np.swapaxes(arr, 0, 1)[:, ::-1]
    if orientation == 7:
        return np.swapaxes(arr, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.swapaxes(arr, 0, 1)[::-1]
    return arr


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise VQFRError(f"{path}: no such file")
    if path.is_dir():
        raise VQFRError(f"{path}: is a folder, not an image")
    try:
        return path.read_bytes()
    except OSError as err:
        raise VQFRError(f"{path}: cannot read ({err.strerror or err})") from None


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make a good image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _is_16bit_color(im: Image.Image, data: bytes) -> bool:
    """Pillow reads 16-bit RGB(A) PNG/TIFF as 8-bit; spot those so OpenCV can keep the depth."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    if im.format == "PNG":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth
    if im.format == "TIFF":
        bits = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
        return bool(bits) and max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (``[ WARN ... grfmt_png.cpp ...]``) while decoding: we report failures ourselves.

    libpng's "libpng error: ..." lines bypass this logger; run :func:`png_data_problem` first so
    that damaged PNG data never reaches OpenCV.
    """
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_data_problem(data: bytes) -> str | None:
    """Why PNG bytes would not decode to a whole image, or None (also None for other formats).

    Pillow fills rows missing from a short image-data stream with black, and OpenCV's libpng
    prints to stderr; this walks the chunks and inflates the image data in 1 MB pieces,
    counting bytes, so a header that promises 20000x20000 pixels costs no memory to refute.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, expected, row_bytes, got = len(_PNG_SIGNATURE), None, 0, 0
    inflater = zlib.decompressobj()
    while True:
        if pos + 8 > len(data):
            return "the file ends before its IEND chunk"
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if pos + 12 + length > len(data):
            return f"the file ends in the middle of its {kind.decode('latin-1')} chunk"
        if kind == b"IHDR" and length >= 13:
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            bits = _PNG_CHANNELS.get(color, 4) * depth
            passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
            expected = 0
            for x0, y0, dx, dy in passes:
                w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
                if w and h:
                    expected += h * (1 + (w * bits + 7) // 8)  # a filter byte per row
            row_bytes = 0 if interlace else 1 + (width * bits + 7) // 8
        elif kind == b"IDAT" and expected is not None:
            try:
                while body:
                    got += len(inflater.decompress(body, 1 << 20))
                    body = inflater.unconsumed_tail
            except zlib.error:
                return "its image data is corrupt"
        elif kind == b"IEND":
            break
        pos += 12 + length
    if expected is not None and got + len(inflater.flush()) < expected:
        if row_bytes:
            return f"its image data stops after {got // row_bytes} of {expected // row_bytes} rows"
        return "its image data stops early"
    return None


def _decode_16bit_color(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    with quiet_opencv():
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise VQFRError(f"{name}: corrupt or truncated image")
    if arr.ndim == 2:
        return arr, None
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB), arr[..., 3]
    return cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB), None


@contextlib.contextmanager
def _own_size_limit():
    """Switch off Pillow's decompression-bomb guard (warning and error) while we apply our own limit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit


def _decode_pillow(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    # The size was checked against our own limit; Pillow's bomb guard would only repeat it.
    with _own_size_limit():
        saved_truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved_truncated
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L")), None
    if mode == "L":
        return np.asarray(im), None
    if mode == "LA":
        arr = np.asarray(im)
        return arr[..., 0], arr[..., 1]
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        return np.clip(arr, 0, 65535).astype(np.uint16), None
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        scale = 65535.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
        return np.clip(arr * scale, 0, 65535).round().astype(np.uint16), None
    if mode == "RGBA":
        arr = np.asarray(im)
        return arr[..., :3], arr[..., 3]
    if mode == "RGB":
        return np.asarray(im), None
    # CMYK, YCbCr, LAB, RGBX, ...: let Pillow convert them.
    has_alpha = "A" in mode or "transparency" in im.info
    arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    return (arr[..., :3], arr[..., 3]) if has_alpha else (arr, None)

"""Image reading/writing: formats, EXIF orientation, gray, alpha, 16 bit, bombs, truncated files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from vqfr.errors import VQFRError
from vqfr.io import read_image, supports_alpha, to_uint8, write_image


def _rgb(h: int = 12, w: int = 17, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_roundtrip_exactly(fmt):
    arr = _rgb()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    got = read_image(_pil_bytes(Image.fromarray(arr), fmt, **kw))
    assert got.pixels.dtype == np.uint8 and got.alpha is None and not got.is_gray
    np.testing.assert_array_equal(got.pixels, arr)
    assert got.format == fmt


def test_jpeg_reads_as_rgb_close_to_source():
    arr = np.full((16, 24, 3), (200, 40, 90), np.uint8)
    got = read_image(_pil_bytes(Image.fromarray(arr), "JPEG", quality=98))
    assert got.pixels.shape == (16, 24, 3)
    assert np.abs(got.pixels.astype(int) - arr).max() <= 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_transpose(orientation):
    arr = _rgb(6, 10, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _pil_bytes(Image.fromarray(arr), "PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    got = read_image(data).pixels
    np.testing.assert_array_equal(got, expected)
    if orientation >= 5:
        assert got.shape[:2] == (10, 6)


def test_gray_and_gray_alpha():
    g = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    got = read_image(_pil_bytes(Image.fromarray(g, "L"), "PNG"))
    assert got.is_gray and got.pixels.shape == (6, 8)
    np.testing.assert_array_equal(got.pixels, g)
    la = Image.merge("LA", [Image.fromarray(g), Image.fromarray(255 - g)])
    got = read_image(_pil_bytes(la, "PNG"))
    assert got.is_gray
    np.testing.assert_array_equal(got.alpha, 255 - g)
    assert got.to_array().shape == (6, 8, 4)


def test_rgba_and_palette_transparency():
    rgba = np.dstack([_rgb(), np.linspace(0, 255, 12 * 17).reshape(12, 17).astype(np.uint8)])
    got = read_image(_pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(got.pixels, rgba[..., :3])
    np.testing.assert_array_equal(got.alpha, rgba[..., 3])
    pal = Image.fromarray(_rgb()).convert("P")
    pal.info["transparency"] = 0
    got = read_image(_pil_bytes(pal, "PNG", transparency=0))
    assert got.alpha is not None and got.pixels.shape == (12, 17, 3)


def test_16bit_png_keeps_depth_color_gray_and_alpha(tmp_path):
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    got = read_image(tmp_path / "c.png")
    assert got.bit_depth == 16
    np.testing.assert_array_equal(got.pixels, rgb16)
    gray16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), gray16)
    got = read_image(tmp_path / "g.png")
    assert got.is_gray and got.bit_depth == 16
    np.testing.assert_array_equal(got.pixels, gray16)
    rgba16 = rng.integers(0, 65536, (9, 11, 4), dtype=np.uint16)
    write_image(tmp_path / "a.png", rgba16)
    got = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(got.to_array(), rgba16)


def test_pixel_limit_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(path)
    with pytest.raises(VQFRError, match=r"6\.0 megapixels.*--max-pixels"):
        read_image(path, max_pixels=5_000_000)
    assert read_image(path, max_pixels=None).pixels.shape == (2000, 3000)


@pytest.mark.parametrize("side", [12_000, 60_000])  # under and over Pillow's own bomb error threshold
def test_huge_header_gets_our_message_and_no_pillow_warning(tmp_path, side, truncated_png):
    path = tmp_path / "bomb.png"
    path.write_bytes(truncated_png(side, side, 0))  # the header only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        with pytest.raises(VQFRError, match=r"megapixels, above the limit of 100\.0 megapixels.*--max-pixels"):
            read_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_a_one_line_error(tmp_path, fmt):
    data = _pil_bytes(Image.fromarray(_rgb(64, 64)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VQFRError, match="corrupt or truncated") as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_truncated_16bit_png_is_an_error(tmp_path):
    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 65536, (64, 64, 3), dtype=np.uint16))
    path = tmp_path / "cut16.png"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(VQFRError, match="corrupt or truncated"):
        read_image(path)


def test_non_image_missing_and_folder(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello, not a jpeg")
    with pytest.raises(VQFRError, match="not an image"):
        read_image(tmp_path / "notes.jpg")
    with pytest.raises(VQFRError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(VQFRError, match="is a folder"):
        read_image(tmp_path)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "bmp", "tiff"])
def test_write_by_extension_and_read_back(tmp_path, ext):
    arr = np.zeros((10, 14, 3), np.uint8)
    arr[:] = (30, 160, 90)  # flat, so JPEG chroma subsampling has nothing to blur
    out = write_image(tmp_path / "sub" / f"x.{ext}", arr)
    got = read_image(out)
    assert got.pixels.shape == (10, 14, 3)
    assert np.abs(got.pixels.astype(int) - arr).mean() < 3
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [f"x.{ext}"]  # no temp file left


def test_write_16bit_to_jpeg_reduces_depth_and_drops_alpha(tmp_path):
    rgba16 = np.full((8, 8, 4), 65535, np.uint16)
    assert not supports_alpha("x.jpg") and supports_alpha("x.png")
    got = read_image(write_image(tmp_path / "x.jpg", rgba16))
    assert got.bit_depth == 8 and got.alpha is None and got.pixels.min() >= 250


def test_write_unknown_extension_and_to_uint8(tmp_path):
    with pytest.raises(VQFRError, match="unknown image extension"):
        write_image(tmp_path / "x.gif2", np.zeros((2, 2), np.uint8))
    np.testing.assert_array_equal(
        to_uint8(np.array([0, 128, 257, 65535], np.uint16)), np.array([0, 0, 1, 255], np.uint8)
    )


def test_png_with_missing_rows_is_refused_not_padded(tmp_path, truncated_png):
    path = tmp_path / "short.png"
    path.write_bytes(truncated_png(200, 200, 10))
    with pytest.raises(VQFRError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: corrupt or truncated image (its image data stops after 10 of 200 rows)"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory read from Linux's /proc")
def test_short_png_with_a_huge_header_costs_no_memory(tmp_path, truncated_png):
    import subprocess
    import sys

    path = tmp_path / "bomb.png"
    path.write_bytes(truncated_png(12_000, 12_000, 10))  # decoded, 432 MB of pixels
    code = (
        "from pathlib import Path\n"
        "from vqfr.io import read_image\n"
        "from vqfr.errors import VQFRError\n"
        "try:\n"
        f"    read_image({str(path)!r}, max_pixels=None)\n"
        "except VQFRError as err:\n"
        "    print(err)\n"
        # VmHWM, not ru_maxrss: the latter keeps the forked test runner's size across exec
        "status = Path('/proc/self/status').read_text().splitlines()\n"
        "print(next(int(line.split()[1]) // 1024 for line in status if line.startswith('VmHWM')))\n"
    )
    root = Path(__file__).resolve().parents[1]  # this checkout's vqfr, whatever the current folder
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    out = proc.stdout.splitlines()
    assert out[0].endswith("corrupt or truncated image (its image data stops after 10 of 12000 rows)"), out
    assert int(out[1]) < 300, f"peak memory {out[1]} MB"  # ~100 MB of imports; the pixels would add 432 MB


def test_interlaced_and_every_png_layout_still_read(tmp_path):
    from conftest import png_bytes

    from vqfr.io.read import png_data_problem

    img = _rgb(37, 53)
    raw = b""  # Adam7: seven passes of sub-images, each row with a filter byte
    adam7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    for x0, y0, dx, dy in adam7:
        raw += b"".join(b"\x00" + row.tobytes() for row in img[y0::dy, x0::dx])
    np.testing.assert_array_equal(read_image(png_bytes(53, 37, raw, interlace=1)).pixels, img)
    short = png_bytes(53, 37, raw[:-5], interlace=1)
    assert png_data_problem(short) == "its image data stops early"
    for mode in ("1", "L", "P", "LA", "RGB", "RGBA", "I;16"):
        data = _pil_bytes(Image.fromarray(_rgb(37, 53)).convert(mode), "PNG")
        assert png_data_problem(data) is None, mode
    for channels in (3, 4):
        ok, buf = cv2.imencode(".png", np.full((9, 11, channels), 40000, np.uint16))
        assert png_data_problem(buf.tobytes()) is None

"""Fixtures shared by several test files."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest


def _truncated_png(width: int, height: int, rows: int) -> bytes:
    """An RGB PNG whose header promises ``width x height`` pixels but whose (valid) image data holds ``rows`` rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + bytes([120]) * (3 * width) for _ in range(rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture
def truncated_png() -> Callable[[int, int, int], bytes]:
    """``truncated_png(width, height, rows)``: PNG bytes whose image data stops after ``rows`` rows."""
    return _truncated_png

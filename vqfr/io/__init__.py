"""Image reading and writing (no torch)."""

from vqfr.io.read import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    LoadedImage,
    apply_orientation,
    check_pixel_limit,
    read_image,
)
from vqfr.io.write import encode_image, supports_alpha, to_uint8, write_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "apply_orientation",
    "check_pixel_limit",
    "encode_image",
    "read_image",
    "supports_alpha",
    "to_uint8",
    "write_image",
]

"""Background upsamplers for :class:`~vqfr.restore.FaceRestorer` (the non-face part of a photo).

An upsampler is any callable ``(rgb_uint8, scale) -> rgb_uint8``. Without one, the background is
resized with Lanczos. :class:`RealESRGANUpsampler` adapts Real-ESRGAN for users who have the
``realesrgan`` package and a weights file; it is optional and never downloaded by vqfr.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vqfr.errors import VQFRError


class RealESRGANUpsampler:
    """Real-ESRGAN (RRDBNet) background upsampler.

    ``weights`` is e.g. ``RealESRGAN_x2plus.pth`` (scale 2) or ``RealESRGAN_x4plus.pth`` (scale 4);
    the network scale is read from the file name unless ``net_scale`` is given. ``tile`` splits big
    images to bound GPU memory (0 = whole image at once).
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        net_scale: int | None = None,
        tile: int = 400,
        half: bool = False,
        device: str | None = None,
    ):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise VQFRError(f"Real-ESRGAN weights not found: {path}")
        try:
            from basicsr.archs.rrdbnet_arch import RRDBNet
            from realesrgan import RealESRGANer
        except ImportError:
            raise VQFRError(
                "--bg-upsampler realesrgan needs the realesrgan package (pip install realesrgan); "
                "or leave it out to resize the background with Lanczos"
            ) from None
        scale = net_scale or (4 if "x4" in path.name.lower() else 2)
        net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=scale)
        self._upsampler = RealESRGANer(
            scale=scale, model_path=str(path), model=net, tile=tile, tile_pad=10, pre_pad=0, half=half, device=device
        )

    def __call__(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        out, _ = self._upsampler.enhance(bgr, outscale=scale)
        return np.ascontiguousarray(out[..., ::-1])

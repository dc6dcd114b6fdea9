"""Background upsamplers for :class:`~vqfr.restore.FaceRestorer` (the non-face part of a photo).

An upsampler is any callable ``(rgb_uint8, scale) -> rgb_uint8``. Without one, the background is
resized with Lanczos. :class:`RealESRGANUpsampler` runs Real-ESRGAN's RRDBNet (our plain-PyTorch
copy of the architecture, :mod:`vqfr.nn.rrdbnet`) on weights the user gives, e.g.
``RealESRGAN_x2plus.pth``; vqfr never downloads them.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from vqfr.errors import VQFRError


class RealESRGANUpsampler:
    """Real-ESRGAN background upsampler, tiled so memory stays bounded on big photos.

    ``weights``: a Real-ESRGAN RRDBNet file (``params_ema``/``params``/bare); its scale (x1, x2 or
    x4), width and depth are read from the weights. ``tile`` is the tile side in input pixels
    (0 = the whole image at once) and ``tile_pad`` the overlap each tile sees around it. The
    network output is resized with Lanczos when the requested scale differs from the network's.
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        tile: int = 400,
        tile_pad: int = 10,
        device: str = "auto",
        half: bool = False,
    ) -> None:
        import torch

        from vqfr.nn.checkpoint import check_fit, load_state_dict
        from vqfr.nn.rrdbnet import RRDBNet
        from vqfr.utils.device import select_device

        sd = load_state_dict(weights)
        try:
            scale = RRDBNet.scale_of(sd)
            num_feat = sd["conv_first.weight"].shape[0]
            num_grow_ch = sd["body.0.rdb1.conv1.weight"].shape[0]
            num_block = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
        except (KeyError, ValueError, IndexError):
            raise VQFRError(f"{weights} does not hold Real-ESRGAN (RRDBNet) weights") from None
        net = RRDBNet(3, 3, scale=scale, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch)
        problem = check_fit(net, sd, "RRDBNet")
        if problem:
            raise VQFRError(f"{weights}: {problem}")
        net.load_state_dict(sd)
        self.device = select_device(device)
        self.half = bool(half and self.device.type == "cuda")
        self.net = net.to(self.device).eval()
        if self.half:
            self.net = self.net.half()
        self.net_scale = scale
        self.tile = int(tile)
        self.tile_pad = int(tile_pad)
        self._torch = torch

    def _forward(self, x):
        """Network output for a (1, 3, h, w) tensor whose sides are multiples of the unshuffle factor."""
        return self.net(x.half() if self.half else x).float()

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        """The image upscaled by the network's own factor (RGB uint8 in, RGB uint8 out)."""
        torch = self._torch
        h, w = rgb.shape[:2]
        unshuffle = self.net.unshuffle
        pad_h, pad_w = (-h) % unshuffle, (-w) % unshuffle
        x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        if pad_h or pad_w:
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > 1 else "replicate")
        s = self.net_scale
        with torch.inference_mode():
            out = self._forward(x) if self.tile <= 0 or max(x.shape[-2:]) <= self.tile else self._tiled(x)
            out = out[..., : h * s, : w * s].clamp_(0, 1).mul_(255.0).round_()
            return out[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()

    def _tiled(self, x):
        """Run tile by tile; each tile sees ``tile_pad`` pixels of context that are cut away after."""
        torch = self._torch
        _, _, h, w = x.shape
        s, t, p, u = self.net_scale, self.tile, self.tile_pad, self.net.unshuffle
        out = torch.zeros(1, 3, h * s, w * s, device=x.device)
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                # context window, aligned to the unshuffle factor
                cy0, cx0 = max(y0 - p, 0) // u * u, max(x0 - p, 0) // u * u
                cy1, cx1 = min(-(-(y1 + p) // u) * u, h), min(-(-(x1 + p) // u) * u, w)
                piece = self._forward(x[..., cy0:cy1, cx0:cx1])
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                out[..., y0 * s : y1 * s, x0 * s : x1 * s] = piece[
                    ..., oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
                ]
        return out

    def __call__(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        up = self.upscale(rgb)
        h, w = rgb.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if (up.shape[1], up.shape[0]) != size:
            up = cv2.resize(up, size, interpolation=cv2.INTER_LANCZOS4)
        return up

"""Put restored faces back into the (upscaled) photo without a visible seam."""

from __future__ import annotations

import math

import cv2
import numpy as np

from vqfr.face.align import warp_affine


def crop_to_output(affine: np.ndarray, upscale: float) -> np.ndarray:
    """Invert the image->crop ``affine`` into a crop->output map for an output ``upscale`` times larger.

    With pixel centres at integers, output pixel ``u`` sits over input position ``(u + 0.5) / s - 0.5``,
    hence the ``0.5 * (s - 1)`` shift.
    """
    inverse = cv2.invertAffineTransform(np.asarray(affine, np.float64))
    out = inverse * upscale
    out[:, 2] += 0.5 * (upscale - 1.0)
    return out


def feather_mask(coverage: np.ndarray) -> np.ndarray:
    """Blend weights that rise smoothly from 0 at the crop's edge to 1 well inside it.

    The weight is a smoothstep of the distance to the edge of the warped crop: 0 within 1/50 of the
    face side, 1 beyond 1/6 of it. Same effect as eroding and blurring the crop's mask, but linear in
    time even for very large faces. Where the crop is cut by the image border there is no edge, so a
    face at the border is pasted right up to it.
    """
    side = math.sqrt(max(float(coverage.sum()), 1.0))
    inside = (coverage > 0.999).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    start, width = side / 50, side / 6 - side / 50
    t = np.clip((dist - start) / width, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def paste_face(canvas: np.ndarray, face: np.ndarray, affine: np.ndarray, upscale: float = 1.0) -> np.ndarray:
    """Blend the restored ``face`` crop (S x S x 3, uint8) into ``canvas`` in place and return ``canvas``.

    ``canvas`` is the output image (H x W x 3, uint8 or uint16) at ``upscale`` times the size of the
    image the face was aligned from with the image->crop ``affine``.
    """
    size = face.shape[0]
    to_out = crop_to_output(affine, upscale)
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [-0.5, size - 0.5, 1], [size - 0.5, size - 0.5, 1]])
    pts = corners @ to_out.T
    x0 = max(0, int(math.floor(pts[:, 0].min())))
    y0 = max(0, int(math.floor(pts[:, 1].min())))
    x1 = min(canvas.shape[1], int(math.ceil(pts[:, 0].max())) + 1)
    y1 = min(canvas.shape[0], int(math.ceil(pts[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return canvas
    to_region = to_out.copy()
    to_region[:, 2] -= (x0, y0)
    region_size = (x1 - x0, y1 - y0)
    value_scale = 257.0 if canvas.dtype == np.uint16 else 1.0
    warped = warp_affine(face.astype(np.float32) * value_scale, to_region, region_size)
    # Coverage is warped without shrinking tricks so its edge is exactly where the crop ends.
    coverage = cv2.warpAffine(
        np.ones((size, size), np.float32), to_region, region_size, flags=cv2.INTER_LINEAR, borderValue=0
    )
    mask = feather_mask(coverage)[..., None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    blended = mask * warped + (1.0 - mask) * region
    info = np.iinfo(canvas.dtype)
    canvas[y0:y1, x0:x1] = np.clip(np.rint(blended), info.min, info.max).astype(canvas.dtype)
    return canvas


__all__ = ["crop_to_output", "feather_mask", "paste_face"]

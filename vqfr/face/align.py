"""Align faces onto the FFHQ five-point template with a similarity transform.

The template is the one used across face restoration (GFPGAN, CodeFormer, VQFR) for
512x512 FFHQ crops. Points are in image order: the eye on the image's left, the eye on
the image's right, the nose tip, the mouth corner on the left, the mouth corner on the right.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

# Grey used outside the photo when a face sits at its border (the value the peers pad with).
BORDER_VALUE = (135, 133, 132)


def face_template(size: int = 512) -> np.ndarray:
    """The five template points for a ``size`` x ``size`` crop."""
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping ``src`` points onto ``dst`` (2x3).

    Umeyama's closed form; a reflection is never returned.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / var_s if var_s > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine map ``outer(inner(x))``."""
    out = np.empty((2, 3))
    out[:, :2] = outer[:, :2] @ inner[:, :2]
    out[:, 2] = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return out


def affine_scale(matrix: np.ndarray) -> float:
    """How many destination pixels one source pixel spans (square root of the determinant)."""
    return math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))


def warp_affine(
    src: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
    border_value: float | tuple = 0,
) -> np.ndarray:
    """``cv2.warpAffine`` (``matrix`` maps src -> dst, ``size`` is (width, height)) that does not alias.

    Lanczos interpolation keeps a face that goes to the crop and back nearly unchanged. When the
    warp shrinks by more than 1.25x, the part of ``src`` that lands in the output is first reduced
    with area averaging, so a big face does not come out with jagged, moire-ridden detail.
    """
    matrix = np.asarray(matrix, np.float64)
    scale = affine_scale(matrix)
    if scale < 0.8:
        src, matrix = _shrink_source(src, matrix, size, scale)
    return cv2.warpAffine(
        src,
        matrix,
        size,
        flags=cv2.INTER_LANCZOS4,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


def _shrink_source(src, matrix, size, scale):
    w, h = size
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]])
    pts = corners @ inv.T
    margin = 2.0 / scale
    x0 = max(0, int(math.floor(pts[:, 0].min() - margin)))
    y0 = max(0, int(math.floor(pts[:, 1].min() - margin)))
    x1 = min(src.shape[1], int(math.ceil(pts[:, 0].max() + margin)) + 1)
    y1 = min(src.shape[0], int(math.ceil(pts[:, 1].max() + margin)) + 1)
    if x1 <= x0 or y1 <= y0:
        return src, matrix
    sub = src[y0:y1, x0:x1]
    nw, nh = max(1, round(sub.shape[1] * scale)), max(1, round(sub.shape[0] * scale))
    small = cv2.resize(sub, (nw, nh), interpolation=cv2.INTER_AREA)
    fx, fy = nw / sub.shape[1], nh / sub.shape[0]
    # pixel centres: x_src = (x_small + 0.5) / fx - 0.5 + x0
    to_src = np.array([[1 / fx, 0, 0.5 / fx - 0.5 + x0], [0, 1 / fy, 0.5 / fy - 0.5 + y0]])
    return small, compose(matrix, to_src)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Warp the face with five ``landmarks`` (FFHQ order) to a ``size`` crop: returns ``(crop, affine)``.

    ``affine`` (2x3) maps image pixel coordinates to crop pixel coordinates; :mod:`vqfr.face.paste`
    inverts it to put the restored face back.
    """
    affine = similarity_transform(landmarks, face_template(size))
    border = BORDER_VALUE if image.ndim == 3 else float(np.mean(BORDER_VALUE))
    return warp_affine(image, affine, (size, size), border_value=border), affine

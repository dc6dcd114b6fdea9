"""Locating dlib's model files (``face-recognition-models`` package) and the reference face box.

The package's ``__init__`` needs ``pkg_resources``, so it is located without being imported.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from vqfr.errors import VQFRError

# Face box of a 512x512 FFHQ-aligned face as fractions of the side (dlib's frontal detector on
# aligned faces). Used when the detector finds no face in the reference image.
ALIGNED_FACE_BOX = (0.186, 0.287, 0.791, 0.893)


@functools.cache
def model_path(filename: str) -> Path:
    """Path of one of the ``face-recognition-models`` files, or a one-line error if it is missing."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise VQFRError("dlib metrics need the 'face-recognition-models' package (pip install face-recognition-models)")
    path = Path(spec.submodule_search_locations[0]) / "models" / filename
    if not path.is_file():
        raise VQFRError(f"dlib model file missing: {path}")
    return path


def face_box(detector, rgb: np.ndarray):
    """The largest face dlib's detector finds in ``rgb``, else the FFHQ-aligned box scaled to the image."""
    import dlib

    faces = list(detector(rgb, 0))
    if faces:
        return max(faces, key=lambda r: r.width() * r.height())
    h, w = rgb.shape[:2]
    left, top, right, bottom = ALIGNED_FACE_BOX
    return dlib.rectangle(round(left * w), round(top * h), round(right * w), round(bottom * h))

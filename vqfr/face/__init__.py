"""Face detection, FFHQ alignment and seamless paste-back (no torch, except the MTCNN detector's own module).

The names below are loaded on first use, so that reading the detector table
(``vqfr.face.detectors``, e.g. for ``vqfr restore --help``) does not import OpenCV.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FFHQ_TEMPLATE_512": "align",
    "align_face": "align",
    "face_template": "align",
    "similarity_transform": "align",
    "warp_affine": "align",
    "DetectedFace": "detect",
    "FaceDetector": "detect",
    "center_face": "detect",
    "five_points_from_68": "detect",
    "sort_faces": "detect",
    "DETECTORS": "detectors",
    "DEFAULT_DETECTOR": "detectors",
    "Detector": "detectors",
    "make_detector": "detectors",
    "crop_to_output": "paste",
    "feather_mask": "paste",
    "paste_face": "paste",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""Face detection, FFHQ alignment and seamless paste-back (no torch, except the MTCNN detector's own module).

The names below are loaded on first use, so that reading the detector table
(``vqfr.face.detectors``, e.g. for ``vqfr restore --help``) does not import OpenCV.
"""

from __future__ import annotations

from vqfr.utils.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})

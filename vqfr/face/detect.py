"""Offline face detection and five-point landmarks with dlib, and :class:`DetectedFace`, what every detector returns.

Boxes come from dlib's HOG frontal-face detector (fast on a CPU), or optionally its CNN (MMOD)
detector; landmarks come from the 68-point shape predictor that the ``face-recognition-models``
package ships. The five points the FFHQ template needs are derived from the 68: the two eye
centres (mean of each eye's six contour points), the nose tip (point 30) and the mouth
corners (points 48 and 54). dlib's own 5-point model has no mouth points, so it is not used.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqfr.errors import VQFRError

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"


@dataclass
class DetectedFace:
    """One face: ``box`` (x0, y0, x1, y1) and five ``landmarks`` (FFHQ order) in image pixels."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    landmarks68: np.ndarray | None = field(default=None, repr=False)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
            "eye_distance": round(self.eye_distance, 2),
        }


def model_folder() -> Path:
    """The ``models`` folder of the installed ``face-recognition-models`` package (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise VQFRError("face landmark models not found: install them with `pip install face-recognition-models`")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def five_points_from_68(points: np.ndarray) -> np.ndarray:
    """(68, 2) dlib landmarks -> (5, 2): image-left eye, image-right eye, nose tip, mouth corners."""
    points = np.asarray(points, np.float64)
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]).astype(
        np.float32
    )


class FaceDetector:
    """Find faces and their five landmarks in an RGB ``uint8`` image.

    ``upsample`` doubles the image that many times before HOG detection (1 finds faces down to
    about 40 px). Images whose long side exceeds ``max_side`` are reduced for the box search
    only; landmarks are always fitted at full resolution. ``cnn=True`` uses dlib's MMOD CNN,
    which finds more turned and blurred faces but is far slower without a GPU build of dlib.
    """

    def __init__(
        self,
        upsample: int = 1,
        max_side: int = 2048,
        cnn: bool = False,
        threshold: float = 0.0,
        model_dir: str | Path | None = None,
    ):
        folder = Path(model_dir) if model_dir is not None else model_folder()
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self.threshold = float(threshold)
        self.cnn = bool(cnn)
        self._predictor = _load_model("shape_predictor", str(_require(folder / LANDMARKS_68)))
        if self.cnn:
            self._detector = _load_model("cnn_face_detection_model_v1", str(_require(folder / CNN_DETECTOR)))
        else:
            self._detector = _load_model("get_frontal_face_detector", None)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """All faces in ``image`` (H x W x 3 RGB uint8), largest first."""
        import dlib

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise VQFRError("face detection needs an RGB uint8 image")
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        factor = min(1.0, self.max_side / max(h, w))
        small = image if factor == 1.0 else _resize(image, factor)
        faces = []
        for rect, score in self._boxes(small):
            # back to full resolution (pixel-centre convention)
            x0, y0 = (rect.left() + 0.5) / factor - 0.5, (rect.top() + 0.5) / factor - 0.5
            x1, y1 = (rect.right() + 0.5) / factor - 0.5, (rect.bottom() + 0.5) / factor - 0.5
            full = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
            shape = self._predictor(image, full)
            pts68 = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
            faces.append(
                DetectedFace(
                    box=(max(0.0, x0), max(0.0, y0), min(w - 1.0, x1), min(h - 1.0, y1)),
                    score=float(score),
                    landmarks=five_points_from_68(pts68),
                    landmarks68=pts68,
                )
            )
        return sort_faces(faces)

    def _boxes(self, image: np.ndarray):
        if self.cnn:
            found = self._detector(image, self.upsample)
            return [(d.rect, d.confidence) for d in found if d.confidence >= self.threshold]
        rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
        return list(zip(rects, scores))


def sort_faces(faces: list[DetectedFace]) -> list[DetectedFace]:
    """Largest face first (ties: left to right), so face 00 is the main subject."""

    def key(face: DetectedFace):
        x0, y0, x1, y1 = face.box
        return (-(x1 - x0) * (y1 - y0), x0, y0)

    return sorted(faces, key=key)


def center_face(faces: list[DetectedFace], width: int, height: int) -> list[DetectedFace]:
    """The one face whose box centre is nearest the image centre (empty list stays empty)."""
    if not faces:
        return []

    def dist(face: DetectedFace) -> float:
        x0, y0, x1, y1 = face.box
        return math.hypot((x0 + x1) / 2 - (width - 1) / 2, (y0 + y1) / 2 - (height - 1) / 2)

    return [min(faces, key=dist)]


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=4)
def _load_model(kind: str, path: str | None):
    """Build a dlib model once per process (each takes a few tenths of a second); they are read-only."""
    import dlib

    factory = getattr(dlib, kind)
    return factory() if path is None else factory(path)


def _require(path: Path) -> Path:
    if not path.is_file():
        raise VQFRError(f"face model file missing: {path} (reinstall face-recognition-models)")
    return path

"""The face detector interface and the one table of detectors that the CLI and the API read.

A detector is any object with ``detect(rgb_uint8) -> list[DetectedFace]``: boxes, a score and
five landmarks in the FFHQ template's order (image-left eye, image-right eye, nose tip, mouth
corners left and right), largest face first. The restore pipeline depends only on that. Each
entry of :data:`DETECTORS` builds one; backends are imported only when built, so reading the
table (``vqfr restore --help``) imports neither dlib nor torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from vqfr.errors import VQFRError

if TYPE_CHECKING:  # kept out of run time so that reading the table stays light
    import numpy as np

    from vqfr.face.detect import DetectedFace


@runtime_checkable
class Detector(Protocol):
    """Finds faces in an RGB ``uint8`` image (H x W x 3)."""

    def detect(self, image: np.ndarray) -> list[DetectedFace]: ...


@dataclass(frozen=True)
class DetectorEntry:
    """A named way to build a detector, with the one-line description ``--help`` shows."""

    build: Callable[[], Detector]
    description: str


def _dlib_hog() -> Detector:
    from vqfr.face.detect import FaceDetector

    return FaceDetector()


def _dlib_cnn() -> Detector:
    from vqfr.face.detect import FaceDetector

    return FaceDetector(cnn=True)


def _mtcnn() -> Detector:
    from vqfr.face.mtcnn import MTCNNDetector

    return MTCNNDetector()


DETECTORS: dict[str, DetectorEntry] = {
    "dlib-hog": DetectorEntry(_dlib_hog, "dlib's HOG detector + 68-point landmarks; upright faces >= 40 px"),
    "dlib-cnn": DetectorEntry(_dlib_cnn, "dlib's CNN (MMOD) detector + 68-point landmarks; very slow on a CPU"),
    "mtcnn": DetectorEntry(_mtcnn, "MTCNN cascade and its 5 landmarks; faces >= 20 px (needs facenet-pytorch)"),
}
DEFAULT_DETECTOR = "dlib-hog"


def make_detector(name: str) -> Detector:
    """Build the detector called ``name`` in :data:`DETECTORS` (a one-line error for an unknown name)."""
    entry = DETECTORS.get(name)
    if entry is None:
        raise VQFRError(f"unknown face detector {name!r}: choose one of {', '.join(DETECTORS)}")
    return entry.build()

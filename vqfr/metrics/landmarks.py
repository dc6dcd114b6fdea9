"""Landmark distance with dlib's 68-point predictor: the offline substitute for the paper's LMD.

The paper measures facial-landmark drift with an AWing/FAN model; here both images get dlib's
68 landmarks inside the same face box (found in the ground truth), and the distance is the mean
Euclidean distance over the 68 points, in pixels of the images as given. Labelled ``lmd_dlib``.
"""

from __future__ import annotations

import numpy as np

from vqfr.metrics.dlib_models import face_box, model_path


class DlibLandmarks:
    """Holds the dlib detector and 68-point predictor (not picklable: one per process)."""

    def __init__(self):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_path("shape_predictor_68_face_landmarks.dat")))

    def landmarks(self, rgb: np.ndarray, box) -> np.ndarray:
        """(68, 2) float array of (x, y) landmark positions in a uint8 RGB image."""
        shape = self.predictor(np.ascontiguousarray(rgb), box)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def distance(self, rgb_restored: np.ndarray, rgb_gt: np.ndarray) -> float:
        """Mean L2 distance in pixels between the restored and ground-truth landmarks."""
        box = face_box(self.detector, np.ascontiguousarray(rgb_gt))
        gt = self.landmarks(rgb_gt, box)
        restored = self.landmarks(rgb_restored, box)
        return float(np.sqrt(((gt - restored) ** 2).sum(axis=1)).mean())

"""Identity distance with dlib's face-recognition network: the offline substitute for ArcFace.

dlib's ResNet (``dlib_face_recognition_resnet_model_v1.dat``) maps a face, aligned with its
5-point landmarks, to a 128-d descriptor. We report the angle between the restored and the
ground-truth descriptors in degrees (as the paper reports ArcFace), and the Euclidean distance
(dlib's own scale: below 0.6 means "same person" for dlib). Both images use the face box found in
the ground truth, so a degraded restoration cannot change which region is compared.
This is NOT the paper's ArcFace number; tables label it ``idd_dlib``.
"""

from __future__ import annotations

import numpy as np

from vqfr.metrics.arcface import angle_degrees
from vqfr.metrics.dlib_models import face_box, model_path


class DlibIdentity:
    """Holds the dlib detector, 5-point aligner and descriptor network (not picklable: one per process)."""

    def __init__(self):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.aligner = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
        self.encoder = dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))

    def descriptor(self, rgb: np.ndarray, box) -> np.ndarray:
        """128-d descriptor of the face in ``box`` of a uint8 RGB image."""
        rgb = np.ascontiguousarray(rgb)
        shape = self.aligner(rgb, box)
        return np.array(self.encoder.compute_face_descriptor(rgb, shape, 0), dtype=np.float64)

    def distance(self, rgb_restored: np.ndarray, rgb_gt: np.ndarray) -> tuple[float, float]:
        """(angle in degrees, Euclidean distance) between the two faces' descriptors."""
        box = face_box(self.detector, np.ascontiguousarray(rgb_gt))
        a = self.descriptor(rgb_gt, box)
        b = self.descriptor(rgb_restored, box)
        return angle_degrees(a, b), float(np.linalg.norm(a - b))

"""Face detection, FFHQ alignment and seamless paste-back (no torch)."""

from vqfr.face.align import FFHQ_TEMPLATE_512, align_face, face_template, similarity_transform, warp_affine
from vqfr.face.detect import DetectedFace, FaceDetector, center_face, five_points_from_68, sort_faces
from vqfr.face.paste import crop_to_output, feather_mask, paste_face

__all__ = [
    "FFHQ_TEMPLATE_512",
    "DetectedFace",
    "FaceDetector",
    "align_face",
    "center_face",
    "crop_to_output",
    "face_template",
    "feather_mask",
    "five_points_from_68",
    "paste_face",
    "similarity_transform",
    "sort_faces",
    "warp_affine",
]

"""Face detection on real photos, FFHQ alignment and seamless paste-back (no network involved)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import REAL_LQ, needs_shared_data

from vqfr.face import (
    DetectedFace,
    FaceDetector,
    align_face,
    center_face,
    face_template,
    feather_mask,
    five_points_from_68,
    paste_face,
    similarity_transform,
    sort_faces,
    warp_affine,
)
from vqfr.io import read_image


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def detections(detector):
    """Detect once per photo for the whole module (detection is the slow part on a CPU)."""
    cache: dict[str, tuple[np.ndarray, list[DetectedFace]]] = {}

    def get(rel: str):
        if rel not in cache:
            image = read_image(REAL_LQ / rel).pixels
            cache[rel] = (image, detector.detect(image))
        return cache[rel]

    return get


@needs_shared_data
@pytest.mark.parametrize("rel, count", [("whole/10045.png", 3), ("whole/Blake_Lively.jpg", 2), ("whole/00.jpg", 2)])
def test_face_count_on_real_photos(detections, rel, count):
    image, faces = detections(rel)
    assert len(faces) == count
    h, w = image.shape[:2]
    for face in faces:
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 < x1 < w and 0 <= y0 < y1 < h
        lm = face.landmarks
        assert lm.shape == (5, 2)
        # landmarks sit inside the face box, eyes above nose above mouth, image-left eye first
        assert (lm[:, 0] > x0 - 5).all() and (lm[:, 0] < x1 + 5).all()
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert areas == sorted(areas, reverse=True)


@needs_shared_data
@pytest.mark.parametrize("name", ["Adele", "Julia_Roberts", "Justin_Timberlake", "Paris_Hilton"])
def test_realigning_peer_aligned_crops_is_nearly_identity(detections, name):
    """The shared crops were FFHQ-aligned by the peers' pipeline; aligning them again must barely move them."""
    _, faces = detections(f"aligned/{name}_crop.png")
    assert len(faces) == 1
    err = np.linalg.norm(faces[0].landmarks - face_template(512), axis=1)
    assert err[:2].max() < 10  # eye centres land on the template's eyes
    m = similarity_transform(faces[0].landmarks, face_template(512))
    scale = np.sqrt(np.linalg.det(m[:, :2]))
    angle = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    centre_shift = np.linalg.norm(m @ np.array([256.0, 256.0, 1.0]) - 256.0)
    assert 0.94 < scale < 1.06 and abs(angle) < 5 and centre_shift < 8


@needs_shared_data
def test_alignment_puts_real_eyes_on_the_template(detections):
    image, faces = detections("whole/Blake_Lively.jpg")
    for face in faces:
        crop, affine = align_face(image, face.landmarks, 512)
        assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
        mapped = np.c_[face.landmarks, np.ones(5)] @ affine.T
        assert np.linalg.norm(mapped[:2] - face_template(512)[:2], axis=1).max() < 12
        # the aligned crop itself is found again, eyes where the template says
        again = FaceDetector().detect(crop)
        assert len(again) >= 1
        assert np.linalg.norm(again[0].landmarks[:2] - face_template(512)[:2], axis=1).max() < 15


def test_five_points_from_68_order():
    pts = np.zeros((68, 2), np.float32)
    pts[36:42] = (10, 20)
    pts[42:48] = (30, 20)
    pts[30] = (20, 30)
    pts[48] = (12, 40)
    pts[54] = (28, 40)
    np.testing.assert_allclose(five_points_from_68(pts), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_similarity_transform_recovers_a_known_map():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 2.5, np.array([7.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)
    assert face_template(256)[0, 0] == pytest.approx(192.98138 / 2)


def test_shrinking_warp_does_not_alias():
    board = (np.indices((400, 400)).sum(0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard
    m = np.array([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])
    small = warp_affine(board, m, (40, 40))
    assert abs(float(small[2:-2, 2:-2].mean()) - 127.5) < 3 and small[2:-2, 2:-2].std() < 3


def test_feather_mask_fades_inside_the_crop():
    coverage = np.zeros((200, 200), np.float32)
    coverage[40:160, 40:160] = 1
    mask = feather_mask(coverage)
    assert mask[100, 100] == pytest.approx(1.0, abs=1e-3)
    assert mask[coverage == 0].max() < 1e-3  # never reaches outside the crop
    profile = mask[100, 40:100]
    assert (np.diff(profile) >= -1e-6).all()  # rises monotonically: no hard edge
    assert np.abs(np.diff(profile)).max() < 0.25


@needs_shared_data
@pytest.mark.parametrize("upscale", [1, 2, 3])
def test_pasting_unchanged_crops_gives_back_the_background(detections, upscale):
    """Identity 'restoration': align, paste straight back. No seam, nothing moved, outside untouched."""
    image, faces = detections("whole/Blake_Lively.jpg")
    h, w = image.shape[:2]
    size = (w * upscale, h * upscale)
    background = image.copy() if upscale == 1 else cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4)
    canvas = background.copy()
    for face in faces:
        crop, affine = align_face(image, face.landmarks, 512)
        paste_face(canvas, crop, affine, upscale)
    diff = np.abs(canvas.astype(np.int32) - background).max(axis=2)
    assert diff.mean() < 2
    assert np.percentile(diff, 99) < (25 if upscale == 1 else 10)
    changed = diff > 0
    assert 0.05 < changed.mean() < 0.8
    # a pasted face that is moved by even 2 output pixels shows up clearly
    shifted = background.copy()
    crop, affine = align_face(image, faces[0].landmarks, 512)
    affine = affine.copy()
    affine[:, 2] += affine[:, :2] @ np.array([2.0 / upscale, 0.0])
    paste_face(shifted, crop, affine, upscale)
    assert np.abs(shifted.astype(np.int32) - background).max(axis=2).mean() > diff.mean()


def test_paste_into_16bit_canvas_and_at_the_border():
    canvas = np.full((100, 120, 3), 1000, np.uint16)
    face = np.full((64, 64, 3), 200, np.uint8)
    # a face crop hanging over the top-left corner of the image
    affine = similarity_transform(face_template(64) * 0.5 - 10, face_template(64))
    paste_face(canvas, face, affine, 1.0)
    assert canvas.dtype == np.uint16
    assert canvas[2, 2, 0] == 200 * 257  # fully inside the eroded mask even at the image edge
    assert canvas[-1, -1, 0] == 1000


def test_sort_and_center_face():
    def face(x0, y0, x1, y1):
        return DetectedFace((x0, y0, x1, y1), 1.0, np.zeros((5, 2), np.float32))

    small, big, mid = face(0, 0, 10, 10), face(50, 50, 90, 90), face(40, 10, 60, 30)
    assert sort_faces([small, mid, big]) == [big, mid, small]
    assert center_face([small, mid, big], 140, 140) == [big]
    assert center_face([], 10, 10) == []

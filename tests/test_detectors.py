"""The detector interface and table, and the MTCNN backend (plain PyTorch, facenet-pytorch's weight files)."""

from __future__ import annotations

import importlib.util
import json
import sys

import cv2
import numpy as np
import pytest
from conftest import REAL_LQ, needs_shared_data

from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.face import DetectedFace, FaceDetector, face_template
from vqfr.face.detectors import DEFAULT_DETECTOR, DETECTORS, Detector, DetectorEntry, make_detector
from vqfr.io import read_image, write_image

HAS_MTCNN_WEIGHTS = importlib.util.find_spec("facenet_pytorch") is not None
needs_mtcnn = pytest.mark.skipif(
    not HAS_MTCNN_WEIGHTS,
    reason="MTCNN weights not installed: they ship in facenet-pytorch (pip install --no-deps facenet-pytorch)",
)


# ---------------------------------------------------------------- helpers and fixtures
@pytest.fixture(scope="module")
def mtcnn():
    if not HAS_MTCNN_WEIGHTS:
        pytest.skip("MTCNN weights not installed: they ship in facenet-pytorch (pip install --no-deps facenet-pytorch)")
    return make_detector("mtcnn")


@pytest.fixture(scope="module")
def hog():
    return make_detector("dlib-hog")


def _place(canvas: np.ndarray, face: np.ndarray, centre, side: float, angle: float = 0.0) -> np.ndarray:
    """Paste a 512 px FFHQ-aligned face, ``side`` px wide and rotated by ``angle`` degrees (counter-clockwise
    on screen); returns where its five template points land on the canvas."""
    pre = round(side * 1.5)  # shrink with area averaging first, then rotate: no aliasing
    small = cv2.resize(face, (pre, pre), interpolation=cv2.INTER_AREA)
    a = np.radians(-angle)
    rot = side / pre * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = np.c_[rot, np.asarray(centre, float) - rot @ np.array([pre / 2, pre / 2])]
    cv2.warpAffine(small, m, canvas.shape[1::-1], canvas, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    return face_template(pre) @ m[:, :2].T + m[:, 2]


def _match(found: list[DetectedFace], truth: np.ndarray) -> DetectedFace:
    """The detection whose landmarks lie nearest the true ones."""
    return min(found, key=lambda f: np.linalg.norm(f.landmarks - truth, axis=1).mean())


def _relative_errors(face: DetectedFace, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(face.landmarks - truth, axis=1) / np.linalg.norm(truth[1] - truth[0])


def _eye_angle(points: np.ndarray) -> float:
    """Angle of the eye line in degrees, counter-clockwise on screen (image y points down)."""
    dx, dy = points[1] - points[0]
    return float(np.degrees(np.arctan2(-dy, dx)))


@pytest.fixture(scope="module")
def canvas():
    """The four shared aligned faces on a noisy background: large, small (eyes 12 px apart), rotated +-30 degrees."""
    if not REAL_LQ.is_dir():
        pytest.skip(f"shared test photos not found at {REAL_LQ}")
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    names = ["Adele", "Julia_Roberts", "Justin_Timberlake", "Paris_Hilton"]
    faces = [read_image(REAL_LQ / "aligned" / f"{n}_crop.png").pixels for n in names]
    truths = {
        "upright": _place(image, faces[0], (120, 130), 200),
        "left 30": _place(image, faces[1], (360, 120), 170, angle=30),
        "right 30": _place(image, faces[2], (530, 330), 170, angle=-30),
        "small": _place(image, faces[3], (300, 380), 48),
    }
    return image, truths


# ---------------------------------------------------------------- the interface and the table
def test_table_and_default():
    assert list(DETECTORS) == ["dlib-hog", "dlib-cnn", "mtcnn"]
    assert DEFAULT_DETECTOR in DETECTORS
    assert all(entry.description and "\n" not in entry.description for entry in DETECTORS.values())
    hog = make_detector("dlib-hog")
    assert isinstance(hog, FaceDetector) and isinstance(hog, Detector) and not hog.cnn
    with pytest.raises(VQFRError, match="unknown face detector 'nope': choose one of dlib-hog, dlib-cnn, mtcnn"):
        make_detector("nope")


def test_cli_choices_come_from_the_table(monkeypatch, capsys):
    monkeypatch.setitem(DETECTORS, "other", DetectorEntry(lambda: None, "a detector only this test knows"))
    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "{dlib-hog,dlib-cnn,mtcnn,other}" in help_text and "a detector only this test knows" in help_text


class _FixedDetector:
    """Reports one face at a fixed place: the pipeline must use whatever detector it is given."""

    def __init__(self):
        self.calls = 0
        self.landmarks = (face_template(512) * 0.25 + (20.0, 10.0)).astype(np.float32)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        self.calls += 1
        return [DetectedFace((30.0, 40.0, 130.0, 150.0), 0.75, self.landmarks.copy())]


def test_a_detector_registered_in_the_table_runs_end_to_end(tiny_v2_checkpoint, tmp_path, monkeypatch):
    fixed = _FixedDetector()
    monkeypatch.setitem(DETECTORS, "fixed", DetectorEntry(lambda: fixed, "test detector"))
    image = np.random.default_rng(1).integers(0, 256, (180, 200, 3), dtype=np.uint8)
    inp, out = tmp_path / "in" / "photo.png", tmp_path / "out"
    inp.parent.mkdir()
    write_image(inp, image)
    argv = ["restore", "-i", str(inp), "-o", str(out), "--model", str(tiny_v2_checkpoint), "-s", "1", "-q"]
    assert main([*argv, "--detector", "fixed"]) == 0
    assert fixed.calls == 1
    entry = json.loads((out / "results.json").read_text())["inputs"][0]
    assert [f["box"] for f in entry["faces"]] == [[30.0, 40.0, 130.0, 150.0]]
    assert entry["faces"][0]["score"] == 0.75
    np.testing.assert_allclose(entry["faces"][0]["landmarks"], fixed.landmarks, atol=0.01)
    assert len(list((out / "restored_faces").iterdir())) == 1


def test_face_restorer_takes_a_name_or_an_object(tiny_v2_checkpoint, monkeypatch):
    from vqfr.restore import FaceRestorer

    fixed = _FixedDetector()
    monkeypatch.setitem(DETECTORS, "fixed", DetectorEntry(lambda: fixed, "test detector"))
    image = np.full((180, 200, 3), 128, np.uint8)
    for detector in ("fixed", fixed):
        restorer = FaceRestorer(model=str(tiny_v2_checkpoint), device="cpu", upscale=1, detector=detector)
        assert restorer.detector is fixed
        result = restorer.restore(image)
        assert [f.box for f in result.faces] == [(30.0, 40.0, 130.0, 150.0)]
        np.testing.assert_allclose(result.faces[0].landmarks, fixed.landmarks)
    with pytest.raises(VQFRError, match="unknown face detector 'nope'"):
        FaceRestorer(model="/nonexistent.pth", device="cpu", detector="nope")  # before the model load
    with pytest.raises(VQFRError, match="detector must be a detector name or have a detect"):
        FaceRestorer(model="/nonexistent.pth", device="cpu", detector=5)


def test_the_default_detector_is_built_on_first_use(tiny_v2_checkpoint, monkeypatch):
    from vqfr.restore import FaceRestorer

    fixed = _FixedDetector()
    monkeypatch.setitem(DETECTORS, DEFAULT_DETECTOR, DetectorEntry(lambda: fixed, "stands in for the default"))
    restorer = FaceRestorer(model=str(tiny_v2_checkpoint), device="cpu", upscale=1)
    assert restorer._detector is None  # aligned-only use never builds one
    assert restorer.detector is fixed


# ---------------------------------------------------------------- missing or broken MTCNN weights
def test_missing_mtcnn_weights_give_one_line_with_the_install_command(monkeypatch, tmp_path, capsys):
    from vqfr.face import mtcnn

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "facenet_pytorch" else real_find_spec(name, *args)

    monkeypatch.setattr(mtcnn.importlib.util, "find_spec", find_spec)
    with pytest.raises(VQFRError) as err:
        make_detector("mtcnn")
    assert "\n" not in str(err.value) and "pip install --no-deps facenet-pytorch" in str(err.value)

    # the CLI says the same in one line (exit status 2) before loading any restoration model
    inp = tmp_path / "in" / "photo.png"
    inp.parent.mkdir()
    write_image(inp, np.zeros((40, 40, 3), np.uint8))
    argv = ["restore", "-i", str(inp), "-o", str(tmp_path / "out"), "--model", "/nonexistent.pth", "-q"]
    rc = main([*argv, "--detector", "mtcnn"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1
    assert lines[0].startswith("vqfr restore: error:") and "pip install --no-deps facenet-pytorch" in lines[0]


def test_missing_or_corrupt_weight_files_give_one_line(tmp_path):
    from vqfr.face.mtcnn import MTCNNDetector

    hint = r"\(run `pip install --no-deps facenet-pytorch`\)"
    with pytest.raises(VQFRError, match=rf"MTCNN weight file missing: .*pnet\.pt {hint}"):
        MTCNNDetector(weights_dir=tmp_path)
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(VQFRError) as err:
        MTCNNDetector(weights_dir=tmp_path)
    assert "cannot be loaded" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- MTCNN itself
def test_nms_keeps_the_best_of_overlapping_boxes():
    from vqfr.face.mtcnn import nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], float)
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]  # box 0 overlaps box 1 by IoU 0.68
    # measured over the smaller box, the small box inside the big ones goes too
    assert nms(boxes, scores, 0.5, by_min=True).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


@needs_mtcnn
def test_weights_load_without_importing_facenet_pytorch_or_torchvision(mtcnn):
    assert "facenet_pytorch" not in sys.modules and "torchvision" not in sys.modules
    assert mtcnn.pnet.conv1.weight.shape == (10, 3, 3, 3) and mtcnn.onet.dense6_3.out_features == 10


@needs_mtcnn
@needs_shared_data
@pytest.mark.parametrize("rel, count", [("whole/10045.png", 3), ("whole/Blake_Lively.jpg", 2), ("whole/00.jpg", 2)])
def test_mtcnn_finds_the_faces_in_the_shared_photos_with_landmarks_near_dlibs(mtcnn, hog, rel, count):
    image = read_image(REAL_LQ / rel).pixels
    found = mtcnn.detect(image)
    assert len(found) == count
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in found]
    assert areas == sorted(areas, reverse=True)
    h, w = image.shape[:2]
    reference = hog.detect(image)
    assert len(reference) == count
    for face in found:
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1 and 0.9 < face.score <= 1
        lm = face.landmarks
        assert lm.shape == (5, 2) and lm.dtype == np.float32
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left eye and mouth corner first
        # dlib's eye centres average the eye outline, MTCNN's sit on the pupils: on these photos the
        # points were measured at most 5.1 px apart, 16% of the eye distance on the smallest faces
        # (eyes 30 px apart; mean over the five points 12% there, 2-6% on the larger faces)
        ref = _match(reference, lm).landmarks
        assert np.linalg.norm(lm - ref, axis=1).max() < 8
        err = _relative_errors(face, ref)
        assert err.max() < 0.25 and err.mean() < 0.16


@needs_mtcnn
@needs_shared_data
def test_mtcnn_finds_small_and_rotated_faces_on_a_composed_canvas(mtcnn, canvas):
    image, truths = canvas
    found = mtcnn.detect(image)
    assert len(found) == len(truths)  # every face, nothing else
    for name, truth in truths.items():
        face = _match(found, truth)
        err = _relative_errors(face, truth)
        # the template is where FFHQ alignment puts the points, not where MTCNN sees them: measured
        # up to 22% of the eye distance (mean 10%) on this canvas
        assert err.max() < 0.3 and err.mean() < 0.15, name
        assert abs(_eye_angle(face.landmarks) - _eye_angle(truth)) < 5, name


@needs_mtcnn
@needs_shared_data
@pytest.mark.parametrize("angle", [-30, 30])
def test_rotated_face_is_found_and_its_eye_line_follows(mtcnn, angle):
    face = read_image(REAL_LQ / "aligned" / "Adele_crop.png").pixels
    image = np.full((300, 300, 3), 90, np.uint8)
    truth = _place(image, face, (150, 150), 200, angle=angle)
    found = mtcnn.detect(image)
    assert len(found) == 1
    assert abs(_eye_angle(found[0].landmarks) - angle) < 5
    assert _relative_errors(found[0], truth).mean() < 0.15


@needs_mtcnn
def test_mtcnn_on_images_without_faces_or_too_small(mtcnn):
    assert mtcnn.detect(np.zeros((5, 7, 3), np.uint8)) == []  # below one P-Net window
    assert mtcnn.detect(np.full((200, 300, 3), 128, np.uint8)) == []
    with pytest.raises(VQFRError, match="RGB uint8"):
        mtcnn.detect(np.zeros((20, 20), np.uint8))


@needs_mtcnn
@needs_shared_data
def test_large_images_are_searched_reduced_but_reported_at_full_size(canvas):
    from vqfr.face.mtcnn import MTCNNDetector

    image, truths = canvas
    big = cv2.resize(image, (1280, 960), interpolation=cv2.INTER_LINEAR)
    found = MTCNNDetector(max_side=640).detect(big)  # searched at 640x480, the canvas's own size
    truth = truths["upright"] * 2 + 0.5  # pixel centres scale about the pixel edge
    assert _relative_errors(_match(found, truth), truth).mean() < 0.15



def test_crops_outside_the_image_are_black_and_cost_no_more_than_the_image():
    from vqfr.face.mtcnn import _crops

    image = np.full((40, 40, 3), 200, np.uint8)
    crops = _crops(image, np.array([[-40, -40, 40, 40], [0, 0, 40_000, 40_000], [10, 10, 30, 30]], float), 24)
    assert crops.shape == (3, 24, 24, 3) and crops.dtype == np.float32
    assert (crops[0, :12, :12] == 0).all() and (crops[0, 12:, 12:] == 200).all()
    assert (crops[1] == 0).all()  # the image is under a pixel of this crop
    assert (crops[2] == 200).all()

"""MTCNN face detection with five landmarks (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", 2016), in plain PyTorch and numpy.

Three small networks run as a cascade:

1. **P-Net**, fully convolutional, slides a 12x12 window (stride 2) over an image pyramid and
   proposes boxes with a face probability and a box correction;
2. **R-Net** re-scores every proposal from a 24x24 crop and corrects its box;
3. **O-Net** does the same from a 48x48 crop and also places five landmarks: the two eyes, the
   nose tip and the two mouth corners (image-left first, the order the FFHQ template uses).

Between stages overlapping boxes are merged by non-maximum suppression and made square. The
trained weights are the original authors' (converted from Caffe), as shipped in the
``facenet-pytorch`` wheel (``facenet_pytorch/data/{pnet,rnet,onet}.pt``). That package is only
a carrier: its own code needs torchvision, so it is never imported; its weight files are found
with ``importlib.util.find_spec`` (which does not run the package's ``__init__``) and read with
the package's weights-only loader (:mod:`vqfr.nn.safe_load`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from vqfr.errors import VQFRError
from vqfr.face.detect import DetectedFace, sort_faces
from vqfr.nn.checkpoint import check_fit, load_state_dict

WEIGHTS_PACKAGE = "facenet_pytorch"
INSTALL_HINT = "pip install --no-deps facenet-pytorch"
WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")


def weights_folder() -> Path:
    """``facenet_pytorch/data`` of the installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise VQFRError(f"the MTCNN face detector's weights are not installed: run `{INSTALL_HINT}`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


# ---------------------------------------------------------------------------------------------- networks
# Layer names follow the weight files. The fully connected layers were converted from models that
# saw images transposed (Caffe's MATLAB front end is column-major), so their inputs are flattened
# in (width, height, channel) order rather than PyTorch's (channel, height, width).


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: 12x12 receptive field, stride 2; returns (face probability map, box offsets)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets, in units of the window size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return _face_probability(self.conv4_1(x)), self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network on 24x24 crops; returns (face probability, box offsets)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return _face_probability(self.dense5_1(x)), self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 crops; returns (face probability, box offsets, 5 landmarks as x1..x5, y1..y5)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # landmarks as fractions of the crop: x1..x5, y1..y5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return _face_probability(self.dense6_1(x)), self.dense6_2(x), self.dense6_3(x)


def load_networks(folder: str | Path | None = None) -> tuple[PNet, RNet, ONet]:
    """The three networks with their trained weights (``folder`` defaults to facenet-pytorch's data folder)."""
    folder = Path(folder) if folder is not None else weights_folder()
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, WEIGHT_FILES):
        path = folder / name
        if not path.is_file():
            raise VQFRError(f"MTCNN weight file missing: {path} (run `{INSTALL_HINT}`)")
        try:  # the package's one weights-only loader: a truncated, foreign or unsafe file is one line
            state = load_state_dict(path)
            problem = check_fit(net, state, f"the MTCNN {type(net).__name__}")
        except VQFRError as err:
            problem = str(err)
        if problem:
            raise VQFRError(f"MTCNN weight file {path} cannot be loaded ({problem}): run `{INSTALL_HINT}`")
        net.load_state_dict(state)
        net.eval().requires_grad_(False)
    return nets


# ---------------------------------------------------------------------------------------------- boxes
# Boxes are float (x0, y0, x1, y1) in pixel-edge coordinates: pixel column c spans [c, c + 1).


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    Overlap is intersection over union, or over the smaller box with ``by_min`` (the last stage
    uses that to drop a small box lying inside a bigger face's box).
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = iw * ih
        denom = np.minimum(areas[i], areas[rest]) if by_min else areas[i] + areas[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-12)]
    return np.array(keep, np.int64)


def _apply_offsets(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each edge by its offset times the box's width (x) or height (y)."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes + offsets * size


def _square_pixels(boxes: np.ndarray) -> np.ndarray:
    """Square boxes on whole pixels, centred on the given boxes (the side is the longer one)."""
    side = np.maximum(np.rint(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])), 1.0)
    x0 = np.rint((boxes[:, 0] + boxes[:, 2] - side) / 2)
    y0 = np.rint((boxes[:, 1] + boxes[:, 3] - side) / 2)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) float32 crops of whole-pixel boxes; parts outside the image stay black, as in training.

    Only the part inside the image is resized (into its place in the crop), so a huge box costs no
    more memory than the image itself.
    """
    h, w = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64)):
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        scale = size / max(x1 - x0, 1)
        dx0, dx1 = round((sx0 - x0) * scale), min(size, round((sx1 - x0) * scale))
        dy0, dy1 = round((sy0 - y0) * scale), min(size, round((sy1 - y0) * scale))
        if sx1 <= sx0 or sy1 <= sy0 or dx1 <= dx0 or dy1 <= dy0:
            continue
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        out[k, dy0:dy1, dx0:dx1] = cv2.resize(image[sy0:sy1, sx0:sx1], (dx1 - dx0, dy1 - dy0), interpolation=interp)
    return out


def _to_input(batch: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) float32 RGB in 0..255 -> network input (N, 3, H, W) in about [-1, 1].

    The result is a channels-last view of the normalised array (no copy); convolutions in that
    layout run about twice as fast on a CPU.
    """
    return torch.from_numpy((batch - np.float32(127.5)) * np.float32(1 / 128)).permute(0, 3, 1, 2)


def _face_probability(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probability of class 1 of two, computed as a sigmoid of the difference (same value, cheaper)."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


class MTCNNDetector:
    """Find faces and their five landmarks with MTCNN (see the module docstring).

    ``min_face`` is the smallest face side searched for, in pixels (the pyramid starts at the
    scale that maps it to P-Net's 12-pixel window); ``factor`` is the pyramid's step;
    ``thresholds`` are the face probabilities each stage requires (the paper's code uses 0.6,
    0.7, 0.7). Images whose long side exceeds ``max_side`` are reduced for the search; landmarks
    and boxes are reported in full-resolution pixels.
    """

    def __init__(
        self,
        min_face: float = 20.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_side: int = 2048,
        weights_dir: str | Path | None = None,
        batch_size: int = 256,
    ):
        if not min_face >= 12:
            raise VQFRError(f"MTCNN minimum face size must be at least 12 pixels, got {min_face}")
        if not 0.1 <= factor < 1:
            raise VQFRError(f"MTCNN pyramid factor must be in [0.1, 1), got {factor}")
        self.min_face = float(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.max_side = int(max_side)
        self.batch_size = int(batch_size)
        self.pnet, self.rnet, self.onet = load_networks(weights_dir)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """All faces in ``image`` (H x W x 3 RGB uint8), largest first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise VQFRError("face detection needs an RGB uint8 image")
        h, w = image.shape[:2]
        factor = min(1.0, self.max_side / max(h, w))
        small = image
        if factor < 1.0:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        fx, fy = w / small.shape[1], h / small.shape[0]  # the reduction, exactly, per axis
        with torch.inference_mode():
            boxes, scores, points = self._cascade(np.ascontiguousarray(small))
        faces = []
        for box, score, pts in zip(boxes, scores, points):
            # edge coordinates -> pixel-centre coordinates at full resolution (as dlib's boxes)
            x0, x1 = box[0] * fx - 0.5, box[2] * fx - 0.5
            y0, y1 = box[1] * fy - 0.5, box[3] * fy - 0.5
            landmarks = np.stack([(pts[:, 0] + 0.5) * fx - 0.5, (pts[:, 1] + 0.5) * fy - 0.5], axis=1)
            faces.append(
                DetectedFace(
                    box=(max(0.0, x0), max(0.0, y0), min(w - 1.0, x1), min(h - 1.0, y1)),
                    score=float(score),
                    landmarks=landmarks.astype(np.float32),
                )
            )
        return sort_faces(faces)

    # ------------------------------------------------------------------------------------------ stages
    def _cascade(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (edge coordinates), scores and (N, 5, 2) landmarks (pixel-centre coordinates)."""
        empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        boxes, scores = self._propose(image)
        if not len(boxes):
            return empty
        boxes, scores = self._refine(image, boxes)
        if not len(boxes):
            return empty
        return self._output(image, boxes)

    def _pyramid(self, h: int, w: int) -> list[float]:
        scale = 12.0 / self.min_face
        scales = []
        while min(h, w) * scale >= 12:
            scales.append(scale)
            scale *= self.factor
        return scales

    def _propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: P-Net on every pyramid level; windows above threshold, merged, offsets applied."""
        h, w = image.shape[:2]
        found_boxes, found_scores = [], []
        for scale in self._pyramid(h, w):
            sw, sh = max(12, round(w * scale)), max(12, round(h * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            level = cv2.resize(image, (sw, sh), interpolation=interp).astype(np.float32)
            prob, offsets = self.pnet(_to_input(level[None]))
            prob, offsets = prob[0].numpy(), offsets[0].numpy()
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if not len(ys):
                continue
            sx, sy = w / sw, h / sh  # exact per-axis scale back to the image
            # the window under output cell (y, x) covers [2x, 2x + 12) x [2y, 2y + 12) at this level
            boxes = np.stack([2 * xs * sx, 2 * ys * sy, (2 * xs + 12) * sx, (2 * ys + 12) * sy], axis=1)
            score = prob[ys, xs]
            keep = nms(boxes, score, 0.5)
            found_boxes.append(_apply_offsets(boxes[keep], offsets[:, ys[keep], xs[keep]].T))
            found_scores.append(score[keep])
        if not found_boxes:
            return np.zeros((0, 4)), np.zeros(0)
        boxes, scores = np.concatenate(found_boxes), np.concatenate(found_scores)
        keep = nms(boxes, scores, 0.7)
        return _square_pixels(boxes[keep]), scores[keep]

    def _run(self, net: nn.Module, image: np.ndarray, boxes: np.ndarray, size: int) -> list[np.ndarray]:
        outs = []
        for i in range(0, len(boxes), self.batch_size):
            outs.append([t.numpy() for t in net(_to_input(_crops(image, boxes[i : i + self.batch_size], size)))])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 2: R-Net re-scores each proposal from a 24x24 crop and corrects its box."""
        prob, offsets = self._run(self.rnet, image, boxes, 24)
        ok = prob >= self.thresholds[1]
        boxes, prob, offsets = boxes[ok], prob[ok], offsets[ok]
        keep = nms(boxes, prob, 0.7)
        return _square_pixels(_apply_offsets(boxes[keep], offsets[keep])), prob[keep]

    def _output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: O-Net scores a 48x48 crop, corrects the box and places the five landmarks."""
        prob, offsets, marks = self._run(self.onet, image, boxes, 48)
        ok = prob >= self.thresholds[2]
        boxes, prob, offsets, marks = boxes[ok], prob[ok], offsets[ok], marks[ok]
        side = (boxes[:, 2] - boxes[:, 0])[:, None]
        # fractions of the crop (edge coordinates) -> pixel-centre coordinates in the image
        xs = boxes[:, :1] + marks[:, :5] * side - 0.5
        ys = boxes[:, 1:2] + marks[:, 5:] * side - 0.5
        points = np.stack([xs, ys], axis=2)
        boxes = _apply_offsets(boxes, offsets)
        keep = nms(boxes, prob, 0.7, by_min=True)
        return boxes[keep], prob[keep], points[keep]

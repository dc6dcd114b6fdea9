"""Face detectors compared: recall, false positives, landmark error and time per megapixel.

Runs every detector of ``vqfr.face.detectors.DETECTORS`` (or ``--detectors``) on

* the shared real photos (``../shared/data/real_lq/whole``), whose true faces were counted by
  eye: 00.jpg 2, 10045.png 3, Blake_Lively.jpg 2;
* canvases composed here from the FFHQ-aligned 512 px faces in ``../shared/data/faces_hq/train``
  on photo backgrounds from scikit-image (coffee, a cat, a rocket, a microscope slide): upright
  faces at several sizes, faces rotated by +-15 and +-30 degrees, and turned faces: the twelve
  most turned (three-quarter) views of that folder, half of them mirrored so that both directions
  occur (chosen once by the nose tip's offset from the eyes' midpoint, 0.24-0.5 eye distances,
  with both dlib's and MTCNN's landmarks on every other face of the folder). The faces are
  aligned, so where each face and its five landmarks lie on a canvas is known.

A detection counts as a found face when its box centre lies within half a face size of a true
face (face size: half the aligned crop's side, about the width of the face) and its size is
within 0.4 to 2.5 times that; each true face is matched once; every other detection is a false
positive. Landmark error is the median over found faces of the mean distance of the five points
from where the aligned template puts them, in percent of the eye distance (the template is only
approximately where each detector puts eye centres, so small differences mean little).

Times are the best of ``--repeats`` runs per image, detectors interleaved image by image so that
background load hits them alike, summed over all images and divided by their megapixels.

    python benchmarks/bench_detectors.py                         # all detectors (dlib-cnn takes minutes)
    python benchmarks/bench_detectors.py --detectors dlib-hog mtcnn --repeats 5
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vqfr.face.align import face_template
from vqfr.face.detectors import DETECTORS, make_detector
from vqfr.io import read_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# approximate centre and size (px) of each true face in the shared photos, counted and placed by eye
PHOTO_FACES = {
    "00.jpg": [(848, 468, 150), (585, 870, 150)],
    "10045.png": [(215, 165, 75), (415, 180, 75), (405, 475, 70)],
    "Blake_Lively.jpg": [(505, 210, 185), (175, 220, 140)],
}
CANVAS = (768, 576)  # width, height
TURNED = [
    "gpen_0009.jpg", "deca_0006.jpg", "3ddfa_0001.jpg", "pixel2style2pixel_0012.jpg", "stargan-v2_0040.jpg",
    "deep3dfacerecon-pytorch_0007.jpg", "stargan-v2_0002.jpg", "stargan-v2_0012.jpg", "face-api_0002.jpg",
    "pixel2style2pixel_0008.jpg", "photomaker_0006.jpg", "insightface_0007.jpg",
]  # fmt: skip
TEMPLATE = face_template(512)
FACE_CENTRE = TEMPLATE.mean(axis=0)


@dataclass
class Truth:
    centre: np.ndarray
    size: float
    landmarks: np.ndarray | None = None  # (5, 2) where known

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


@dataclass
class Sample:
    scenario: str
    image: np.ndarray
    truths: list[Truth]


# ---------------------------------------------------------------------------------------------- composing
def _backgrounds() -> list[np.ndarray]:
    import skimage.data as data

    out = []
    for name in ("coffee", "chelsea", "rocket", "immunohistochemistry"):
        img = getattr(data, name)()
        scale = max(CANVAS[0] / img.shape[1], CANVAS[1] / img.shape[0])
        img = cv2.resize(img, (round(img.shape[1] * scale) + 1, round(img.shape[0] * scale) + 1))
        out.append(np.ascontiguousarray(img[: CANVAS[1], : CANVAS[0]]))
    return out


def _place(canvas: np.ndarray, face: np.ndarray, homography: np.ndarray, mirror: bool = False) -> Truth:
    """Warp a 512 px aligned face (mirrored first if asked) onto the canvas with ``homography`` (crop ->
    canvas); its truth."""
    template = TEMPLATE
    if mirror:  # a mirrored face's image-left eye is the original's image-right one
        face = np.ascontiguousarray(face[:, ::-1])
        template = np.stack([511 - TEMPLATE[:, 0], TEMPLATE[:, 1]], axis=1)[[1, 0, 2, 4, 3]]
    # shrink with area averaging first so that small faces do not alias, then warp the rest
    side = np.sqrt(abs(np.linalg.det(homography[:2, :2])) / homography[2, 2] ** 2) * 512
    pre = max(16, min(512, int(round(side * 1.5))))
    small = cv2.resize(face, (pre, pre), interpolation=cv2.INTER_AREA)
    h = homography @ np.diag([512 / pre, 512 / pre, 1.0])
    cv2.warpPerspective(small, h, CANVAS, canvas, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    pts = cv2.perspectiveTransform(np.vstack([template, FACE_CENTRE])[None].astype(np.float64), homography)[0]
    return Truth(pts[5], side * 0.5, pts[:5].astype(np.float32))


def _grid_homography(cell: tuple[int, int, int, int], side: float, angle: float, rng) -> np.ndarray:
    x0, y0, cw, ch = cell
    cx = x0 + cw / 2 + rng.uniform(-0.1, 0.1) * max(0.0, cw - side)
    cy = y0 + ch / 2 + rng.uniform(-0.1, 0.1) * max(0.0, ch - side)
    s, a = side / 512, np.radians(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * s
    h = np.eye(3)
    h[:2, :2] = rot
    h[:2, 2] = np.array([cx, cy]) - rot @ np.array([256.0, 256.0])
    return h


def composed_samples(seed: int = 0) -> list[Sample]:
    faces_dir = DATA / "faces_hq" / "train"
    files = sorted(p for p in faces_dir.glob("*.jpg") if p.name not in TURNED)
    rng = np.random.default_rng(seed)
    backgrounds = _backgrounds()
    upright = iter(rng.permutation(len(files)))
    turned = iter(TURNED)
    scenarios = [
        # name, grid (cols, rows), crop sides, angles, turned
        ("upright, eyes 40-50 px", (3, 2), [160, 180, 200], [0], False),
        ("small, eyes 20-31 px", (4, 3), [80, 96, 112, 128], [0], False),
        ("tiny, eyes 10-16 px", (4, 3), [40, 48, 56, 64], [0], False),
        ("rotated +-15 deg", (3, 2), [160, 180], [-15, 15], False),
        ("rotated +-30 deg", (3, 2), [160, 180], [-30, 30], False),
        ("turned (3/4 views)", (3, 2), [170, 190], [0], True),
    ]
    samples = []
    for k, (name, (cols, rows), sides, angles, is_turned) in enumerate(scenarios):
        for c in range(2):
            canvas = backgrounds[(2 * k + c) % len(backgrounds)].copy()
            truths = []
            cw, ch = CANVAS[0] // cols, CANVAS[1] // rows
            for i in range(cols * rows):
                path = faces_dir / next(turned) if is_turned else files[next(upright)]
                face = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
                cell = ((i % cols) * cw, (i // cols) * ch, cw, ch)
                h = _grid_homography(cell, sides[i % len(sides)], angles[i % len(angles)], rng)
                truths.append(_place(canvas, face, h, mirror=is_turned and i % 2 == 1))
            samples.append(Sample(name, canvas, truths))
    return samples


def photo_samples() -> list[Sample]:
    out = []
    for name, faces in PHOTO_FACES.items():
        image = read_image(DATA / "real_lq" / "whole" / name).pixels
        out.append(Sample("shared photos", image, [Truth(np.array([x, y], float), s) for x, y, s in faces]))
    return out


# ---------------------------------------------------------------------------------------------- scoring
def score(truths: list[Truth], found) -> tuple[int, int, list[float]]:
    """(true faces found, false positives, landmark errors in % of the eye distance)."""
    pairs = []
    for d, face in enumerate(found):
        x0, y0, x1, y1 = face.box
        centre, size = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), np.sqrt(max(x1 - x0, 1) * max(y1 - y0, 1))
        for t, truth in enumerate(truths):
            dist = np.linalg.norm(centre - truth.centre)
            if dist < 0.5 * truth.size and 0.4 < size / truth.size < 2.5:
                pairs.append((dist, d, t))
    used_d, used_t, errors = set(), set(), []
    for _, d, t in sorted(pairs):
        if d in used_d or t in used_t:
            continue
        used_d.add(d)
        used_t.add(t)
        truth = truths[t]
        if truth.landmarks is not None:
            err = np.linalg.norm(found[d].landmarks - truth.landmarks, axis=1).mean()
            errors.append(100 * err / truth.eye_distance)
    return len(used_t), len(found) - len(used_d), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--repeats", type=int, default=2, help="timing runs per image and detector (best counts)")
    parser.add_argument("--save", type=Path, default=None, help="write the composed canvases here (PNG)")
    args = parser.parse_args()

    samples = photo_samples() + composed_samples()
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(samples):
            cv2.imwrite(str(args.save / f"{i:02d}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
    detectors = {name: make_detector(name) for name in args.detectors}
    for det in detectors.values():  # warm up: first-call allocations, lazily built models
        det.detect(samples[-1].image)
    best = {name: [np.inf] * len(samples) for name in detectors}
    found = {name: [None] * len(samples) for name in detectors}
    for _ in range(args.repeats):
        for i, sample in enumerate(samples):
            for name, det in detectors.items():
                t = time.perf_counter()
                faces = det.detect(sample.image)
                best[name][i] = min(best[name][i], time.perf_counter() - t)
                found[name][i] = faces

    scenarios = list(dict.fromkeys(s.scenario for s in samples))
    width = max(len(s) for s in scenarios) + 2
    print(f"{'':{width}}{'faces':>6}" + "".join(f"{name:>20}" for name in detectors))
    print(f"{'':{width}}{'':>6}" + "".join(f"{'found / false pos.':>20}" for _ in detectors))
    errors = {name: [] for name in detectors}
    totals = {name: [0, 0] for name in detectors}
    composed_faces = 0
    for scenario in scenarios:
        idx = [i for i, s in enumerate(samples) if s.scenario == scenario]
        n = sum(len(samples[i].truths) for i in idx)
        composed_faces += n if scenario != "shared photos" else 0
        row = f"{scenario:{width}}{n:>6}"
        for name in detectors:
            hit = fp = 0
            for i in idx:
                h, f, e = score(samples[i].truths, found[name][i])
                hit, fp = hit + h, fp + f
                errors[name] += e
            if scenario != "shared photos":
                totals[name][0] += hit
                totals[name][1] += fp
            row += f"{f'{hit} / {fp}':>20}"
        print(row)
    print(
        f"{'all composed':{width}}{composed_faces:>6}"
        + "".join(f"{f'{totals[n][0]} / {totals[n][1]}':>20}" for n in detectors)
    )
    print(
        f"{'landmark error, % eye dist.':{width}}{'':>6}"
        + "".join(f"{np.median(errors[n]) if errors[n] else float('nan'):>20.1f}" for n in detectors)
    )
    megapixels = sum(s.image.shape[0] * s.image.shape[1] for s in samples) / 1e6
    photo_idx = [i for i, s in enumerate(samples) if s.scenario == "shared photos"]
    photo_mp = sum(samples[i].image.shape[0] * samples[i].image.shape[1] for i in photo_idx) / 1e6
    print(
        f"{'seconds per megapixel':{width}}{'':>6}" + "".join(f"{sum(best[n]) / megapixels:>20.2f}" for n in detectors)
    )
    print(
        f"{'  on the shared photos':{width}}{'':>6}"
        + "".join(f"{sum(best[n][i] for i in photo_idx) / photo_mp:>20.2f}" for n in detectors)
    )
    print(f"({len(samples)} images, {megapixels:.1f} MP; best of {args.repeats} runs per image, interleaved)")


if __name__ == "__main__":
    main()

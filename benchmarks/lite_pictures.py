"""The before/after picture of the README and docs/models.md: a real photo, degraded with fixed settings,
restored by the whole-photo pipeline (detection, alignment, paste-back) of ``vqfr restore``.

The photo is scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain), so the picture may be
shipped; the training faces and the held-out people may not be copied into the repository.

    python benchmarks/lite_pictures.py [--model VQFR_lite] [--out docs/images/lite_astronaut.jpg]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One fixed, fairly heavy degradation: blur, 4x down, noise, strong JPEG (the photo is 512x512).
DEGRADATION = {
    "kernel_size": 21,
    "kernel_list": ["iso"],
    "kernel_prob": [1.0],
    "blur_sigma": [2.0, 2.0],
    "downsample_range": [4.0, 4.0],
    "noise_range": [6.0, 6.0],
    "jpeg_range": [45, 45],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="VQFR_lite")
    parser.add_argument("--fidelity", type=float, default=0.5)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "lite_astronaut.jpg"))
    args = parser.parse_args()

    import cv2
    from skimage.data import astronaut

    from vqfr import FaceRestorer
    from vqfr.data.degradations import DegradationConfig, degrade, sample_rng
    from vqfr.io import write_image

    photo = astronaut()
    lq = degrade(photo.astype(np.float32) / 255.0, DegradationConfig.from_dict(DEGRADATION), sample_rng(0))
    lq8 = np.clip(np.rint(lq * 255), 0, 255).astype(np.uint8)
    restorer = FaceRestorer(model=args.model, upscale=1, fidelity=args.fidelity)
    result = restorer.restore(lq8)
    if not result.faces:
        print("no face found in the degraded photo", file=sys.stderr)
        return 1
    # Side by side, cropped to the head (from the detected face box) and shown at 2x.
    x0, y0, x1, y1 = (int(v) for v in result.faces[0].box)
    cx, cy, half = (x0 + x1) // 2, (y0 + y1) // 2, int(0.9 * max(x1 - x0, y1 - y0))
    top, left = max(0, cy - half), max(0, cx - half)
    crops = [img[top : cy + half, left : cx + half] for img in (lq8, result.image, photo)]
    size = 384
    tiles = [cv2.resize(c, (size, size), interpolation=cv2.INTER_NEAREST) for c in crops]
    gap = np.full((size, 8, 3), 255, np.uint8)
    panel = np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)
    write_image(args.out, panel, quality=90)
    print(f"wrote {args.out}: degraded | {restorer.model_name} (fidelity {args.fidelity:g}) | original")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

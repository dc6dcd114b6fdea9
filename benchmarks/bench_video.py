"""Temporal stability of ``vqfr video``: landmark jitter and face flicker with and without smoothing.

Makes static-camera clips from a shared sample face (``../shared/data/real_lq/aligned``) with
sensor noise (so the real dlib detector wobbles as it does on real footage), restores them with
``--no-smooth`` and with the default smoothing, and prints per clip:

* jitter: mean length (px) of the second difference over time of the five landmarks used for
  alignment (0 for a still face or steady motion);
* error: mean distance (px) of those landmarks from the true ones (the clip is synthetic);
* flicker: mean absolute frame-to-frame difference (0-255) inside the face region of the output,
  next to the same figure for the input (its sensor noise), for the still clip;
* frames/s of the whole loop (decode, detect, restore, paste, encode).

A random network's output jumps with any change of its input (the sensor noise alone), so its
flicker says little; the ``detail`` rows replace the network by one that adds fixed detail in
crop coordinates, as a trained network hallucinates it: that detail moves with the alignment,
so its flicker shows what the alignment's stability is worth.

    python benchmarks/bench_video.py                       # tiny random network (64 px faces)
    python benchmarks/bench_video.py --model VQFR_v2       # the released weights, if present
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vqfr.face.align import face_template
from vqfr.nn.checkpoint import build_network, save_checkpoint
from vqfr.nn.configs import tiny_config
from vqfr.restore import FaceRestorer
from vqfr.video import VideoRestorer, flicker, landmark_jitter
from vqfr.video.synthetic import face_position, make_face_clip

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_lq" / "aligned"


def decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="zoo name or checkpoint (default: a tiny random network)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("W", "H"))
    parser.add_argument("--face-size", type=int, default=128)
    parser.add_argument("--noise", type=float, default=4.0, help="sensor noise, standard deviation (0-255)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    face = cv2.cvtColor(cv2.imread(str(FACES / "Adele_crop.png")), cv2.COLOR_BGR2RGB)
    w, h = args.size
    n, fs = args.frames, args.face_size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            torch.manual_seed(0)
            config = tiny_config("VQFRv2")
            model = str(tmp / "tiny.pth")
            net = build_network("VQFRv2", config)
            save_checkpoint(model, net, arch="VQFRv2", config=config, extra={"face_size": 64})
        restorer = FaceRestorer(model=model, device=args.device, upscale=1, detector="dlib-hog", download=False)
        print(f"model {restorer.model_name}; {n} frames {w}x{h}, face {fs} px, sensor noise {args.noise:g}")
        print(f"{'clip':6} {'smoothing':9} {'jitter px':>9} {'error px':>8} {'flicker':>8} {'input':>6} {'fps':>5}")
        rng = np.random.default_rng(0)
        detail = cv2.GaussianBlur(rng.uniform(-60, 60, (512, 512, 3)).astype(np.float32), (0, 0), 3) * 4
        network = restorer.restore_crops

        def with_detail(crops, fidelity=None):
            return [np.clip(c + detail, 0, 255).astype(np.uint8) for c in crops]

        for motion, restore_crops in (("still", network), ("still", with_detail), ("pan", network)):
            restorer.restore_crops = restore_crops
            name = motion if restore_crops is network else "detail"
            src = tmp / f"{motion}.mp4"
            if not src.exists():
                make_face_clip(src, face, n, (w, h), fs, motion=motion, noise=args.noise, audio_hz=None)
            frames_in = decode(src)
            x, y = face_position(0, n, motion, (w - fs, h - fs))
            mask = np.zeros((h, w), bool)
            mask[y + fs // 4 : y + fs - fs // 8, x + fs // 5 : x + fs - fs // 5] = True  # eyes to chin
            for smooth in (False, True):
                used: dict[int, np.ndarray] = {}
                out = tmp / f"{motion}_{smooth}.mp4"
                start = time.perf_counter()
                report = VideoRestorer(restorer, smooth=smooth).restore(
                    src, out, on_frame=lambda i, faces, used=used: used.update({i: faces[0][1]} if faces else {})
                )
                fps = report.frames / (time.perf_counter() - start)
                idx = sorted(used)
                lm = np.stack([used[i] for i in idx])
                true = np.stack([face_template(fs) + face_position(t, n, motion, (w - fs, h - fs)) for t in idx])
                error = float(np.linalg.norm(lm - true, axis=-1).mean())
                line = f"{name:6} {'on' if smooth else 'off':9} {landmark_jitter(lm):9.3f} {error:8.3f}"
                if motion == "still":  # a static camera: frame-to-frame change is flicker
                    line += f" {flicker(decode(out), mask):8.2f} {flicker(frames_in, mask):6.2f}"
                else:
                    line += f" {'':8} {'':6}"
                print(f"{line} {fps:5.1f}  ({len(idx)}/{report.frames} frames with a face)")


if __name__ == "__main__":
    main()

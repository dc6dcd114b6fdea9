"""Whole-photo restoration speed, stage by stage, with ratios against a baseline in the same process.

Restores the shared real photos (``../shared/data/real_lq/whole``) with a randomly initialised
network (speed does not depend on the weights) and prints, per setting, the median time of the
detect / restore (network) / paste stages summed over the photos:

* baseline: batch size 1, fidelity 0.5;
* batch size 4 (faces per forward pass);
* fidelity 0 (the main branch is skipped).

    python benchmarks/bench_restore.py                # tiny network (64 px faces)
    python benchmarks/bench_restore.py --published    # the 83M-parameter VQFRv2 at 512 px
    python benchmarks/bench_restore.py --published --device cuda --half
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from vqfr.nn.checkpoint import build_network, save_checkpoint
from vqfr.nn.configs import published_config, tiny_config
from vqfr.restore import FaceRestorer

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_lq" / "whole"
STAGES = ("detect", "restore", "paste", "total")


def measure(restorer: FaceRestorer, photos: list[Path], repeats: int, **kw) -> dict[str, float]:
    """Median over ``repeats`` of each stage's time summed over all photos."""
    runs = []
    for _ in range(repeats + 1):  # the first run warms up (dlib models, allocator)
        sums = dict.fromkeys(STAGES, 0.0)
        for photo in photos:
            timings = restorer.restore(photo, **kw).timings
            for k in STAGES:
                sums[k] += timings.get(k, 0.0)
        runs.append(sums)
    return {k: statistics.median(r[k] for r in runs[1:]) for k in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", action="store_true", help="published VQFRv2 at 512 px")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    args = parser.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    cfg = published_config("VQFRv2") if args.published else tiny_config("VQFRv2")
    size = 512 if args.published else 64
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "net.pth"
        save_checkpoint(ckpt, build_network("VQFRv2", cfg), arch="VQFRv2", config=cfg, extra={"face_size": size})
        settings = {
            "batch 1, fidelity 0.5 (baseline)": dict(batch_size=1, fidelity=0.5),
            "batch 4, fidelity 0.5": dict(batch_size=4, fidelity=0.5),
            "batch 4, fidelity 0.0": dict(batch_size=4, fidelity=0.0),
        }
        print(f"{len(photos)} photos from {args.photos}, VQFRv2 at {size} px on {args.device}")
        print(f"{'setting':34s}" + "".join(f"{k:>10s}" for k in STAGES) + "   total vs baseline")
        base = None
        for name, kw in settings.items():
            restorer = FaceRestorer(
                model=ckpt, device=args.device, half=args.half, upscale=2, progress=False, batch_size=kw["batch_size"]
            )
            t = measure(restorer, photos, args.repeats, fidelity=kw["fidelity"])
            base = base or t["total"]
            print(f"{name:34s}" + "".join(f"{t[k]:9.2f}s" for k in STAGES) + f"   {t['total'] / base:.2f}x")


if __name__ == "__main__":
    main()

"""Training throughput: steps/s and peak memory of the tiny and the published configs.

Each config runs in its own subprocess (so peak memory is its own) on synthetic data:
the shared aligned faces (or smooth random images) resized to the config's size, and a
freshly initialised stage-1 network for stage 2. Discriminators are switched on from the
first step so every step carries the full cost (R1 keeps its published period).

    python benchmarks/bench_train.py                          # tiny configs, CPU or GPU
    python benchmarks/bench_train.py --configs vqgan_v2_ffhq512 vqfr_v2_ffhq512 --steps 3
    python benchmarks/bench_train.py --all --steps 5          # all eight configs
    python benchmarks/bench_train.py --amp off; python benchmarks/bench_train.py --amp bf16   # fp32 vs bf16 autocast

Prints one line per config and a JSON list at the end. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "real_lq" / "aligned"
TINY = ["tiny_vqgan_v2", "tiny_vqfr_v2", "tiny_vqgan_v1", "tiny_vqfr_v1"]
PUBLISHED = ["vqgan_v2_ffhq512", "vqfr_v2_ffhq512", "vqgan_v1_ffhq512", "vqfr_v1_ffhq512"]


def _faces(folder: Path, size: int, n: int = 4) -> None:
    import cv2
    import numpy as np

    from vqfr.data.images import read_rgb_float, write_png

    folder.mkdir(parents=True, exist_ok=True)
    shared = sorted(SHARED.glob("*.png"))[:n] if SHARED.is_dir() else []
    for i in range(n):
        if i < len(shared):
            img = read_rgb_float(shared[i])
        else:
            rng = np.random.default_rng(i)
            img = cv2.GaussianBlur(rng.uniform(0, 1, (size, size, 3)).astype(np.float32), (0, 0), 8)
        write_png(folder / f"face{i}.png", cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))


def bench_one(name: str, steps: int, warmup: int, device: str, batch: int | None, amp: str | None = None) -> dict:
    """Run ``warmup + steps`` steps of ``configs/NAME.yml`` in this process and time the last ``steps``."""
    import torch

    from vqfr.nn.checkpoint import build_network, save_checkpoint
    from vqfr.train.config import load_config
    from vqfr.train.perceptual import find_mobilenet_v2_weights
    from vqfr.train.trainer import Trainer

    cfg = load_config(ROOT / "configs" / f"{name}.yml")
    work = Path(tempfile.mkdtemp(prefix=f"bench_{name}_"))
    size = cfg["data"]["train"]["size"]
    _faces(work / "faces", size)
    cfg["data"]["train"]["root"] = str(work / "faces")
    cfg["data"]["val"] = None
    cfg["data"]["num_workers"] = 2
    if batch:
        cfg["data"]["batch_size_per_gpu"] = batch
    cfg["train"]["total_steps"] = warmup + steps
    if amp:
        cfg["train"]["amp"] = amp
    cfg["logging"].update(print_every=10**9, image_every=10**9, checkpoint_every=10**9, val_every=10**9)
    cfg["logging"]["tensorboard"] = False
    for d in cfg["discriminators"]:
        d["start_step"] = 0
    percep = cfg["losses"]["perceptual"]
    if not (percep.get("vgg_weights") and percep.get("lin_weights")) and find_mobilenet_v2_weights() is None:
        percep["type"] = "none"
    if cfg["stage"] == "restoration":
        s1 = cfg["stage1"]
        torch.manual_seed(0)
        path = work / "stage1.pth"
        save_checkpoint(path, build_network(s1["arch"], s1["config"]), arch=s1["arch"], config=s1["config"])
        s1["weights"] = str(path)

    trainer = Trainer(cfg, work / "run", device=device, progress=False)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []

    def tick(step, logs):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    trainer.fit(tick)
    timed = stamps[warmup - 1 :] if warmup > 0 else stamps
    seconds = timed[-1] - timed[0] if len(timed) > 1 else float("nan")
    n = len(timed) - 1
    if trainer.device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        where = torch.cuda.get_device_name()
    else:
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        where = f"cpu ({torch.get_num_threads()} threads)"
    return {
        "config": name,
        "device": where,
        "batch": cfg["data"]["batch_size_per_gpu"],
        "size": size,
        "perceptual": trainer.task.perceptual_name,
        "amp": "bf16" if trainer.amp_dtype else "off",
        "steps_timed": n,
        "s_per_step": seconds / n if n > 0 else float("nan"),
        "steps_per_s": n / seconds if n > 0 and seconds > 0 else float("nan"),
        "peak_memory_mb": round(peak_mb, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=TINY, help="config names under configs/ (default: tiny ones)")
    ap.add_argument("--all", action="store_true", help="the tiny and the published configs")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per config")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, help="override batch_size_per_gpu")
    ap.add_argument("--amp", choices=["auto", "bf16", "off"], help="override train.amp (default: the config's)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(bench_one(args.one, args.steps, args.warmup, args.device, args.batch, args.amp)))
        return 0
    names = TINY + PUBLISHED if args.all else args.configs
    results = []
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--device", args.device] + (["--batch", str(args.batch)] if args.batch else [])
        cmd += ["--amp", args.amp] if args.amp else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"{name:20s} FAILED: {tail}")
            results.append({"config": name, "error": tail})
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(
            f"{name:20s} {res['device']:28s} batch {res['batch']} @ {res['size']}px  "
            f"{res['steps_per_s']:.3f} steps/s ({res['s_per_step']:.2f} s/step)  peak {res['peak_memory_mb']:.0f} MB  "
            f"perceptual={res['perceptual']} amp={res['amp']}"
        )
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU check: CUDA agrees with the CPU, reduced precision keeps the codes, and what a face costs.

Run through ``benchmarks/gpu_check.sh`` on a machine with a CUDA GPU (a few minutes at most):

1. accuracy: random published-size VQFRv2 weights (seeded), the four real aligned faces (or
   seeded smooth images without ``shared/``), fidelity 0.5. CUDA fp32 (TF32 off) against CPU fp32:
   max abs difference of the restored faces (limit 1e-4 on the [-1, 1] scale) and changed codes;
   CUDA bf16 and fp16 against CUDA fp32: changed codes (limit 0) and PSNR.
2. speed: time per face at batch 1, 8 and 32 for fp32 (TF32 on, the default), bf16 and fp16,
   and peak memory per batch.

Prints a table and one JSON line; exits 1 when a limit is broken. ``--device cpu --small``
rehearses the whole flow on a CPU with a tiny network (what the test suite cannot show: the
script itself runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vqfr.nn.checkpoint import build_network, save_checkpoint
from vqfr.nn.configs import published_config, tiny_config
from vqfr.restore.runtime import FaceRuntime

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_lq" / "aligned"


def faces(size: int, n: int = 4) -> list[np.ndarray]:
    files = sorted(FACES.glob("*.png"))[:n] if FACES.is_dir() else []
    out = [cv2.resize(cv2.imread(str(f))[..., ::-1], (size, size), interpolation=cv2.INTER_AREA) for f in files]
    rng = np.random.default_rng(0)
    while len(out) < n:
        noise = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), size / 32)
        out.append(np.clip(noise, 0, 255).astype(np.uint8))
    return [np.ascontiguousarray(f) for f in out]


def batch_tensor(crops: list[np.ndarray], device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.stack(crops)).to(device)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def codes(rt: FaceRuntime, x: torch.Tensor) -> torch.Tensor:
    """The code indices the runtime's network picks for ``x`` (encoder and selection run in fp32)."""
    with torch.inference_mode():
        _, logits = rt.net.select_codes(rt.net.encoder(x))
    return logits.argmax(dim=-1).cpu()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float().cpu() - b.float().cpu()) / 2).pow(2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def timed(rt: FaceRuntime, x: torch.Tensor, fidelity: float, repeats: int) -> float:
    """Best wall time of ``repeats`` forward passes (after one warm-up), synchronised."""
    sync = torch.cuda.synchronize if rt.device.type == "cuda" else (lambda: None)
    rt.forward(x, fidelity)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        rt.forward(x, fidelity)
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu to rehearse")
    ap.add_argument("--small", action="store_true", help="tiny network (rehearsal)")
    ap.add_argument("--batches", default="1,8,32", help="batch sizes to time")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --small to rehearse)", file=sys.stderr)
        return 2
    arch = "VQFRv2"
    config = tiny_config(arch) if args.small else published_config(arch)
    size = 64 if args.small else 512
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="vqfr_gpu_check_"))
    ckpt = work / "vqfrv2_random.pth"
    save_checkpoint(ckpt, build_network(arch, config), arch=arch, config=config, extra={"face_size": size})
    crops = faces(size)
    fidelity = 0.5
    failures: list[str] = []
    report: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "face_size": size}

    # 1. accuracy ---------------------------------------------------------------------------------
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref_rt = FaceRuntime(str(ckpt), device="cpu", precision="fp32", batch_size=len(crops))
    x_cpu = batch_tensor(crops, torch.device("cpu"))
    ref_out, ref_codes = ref_rt.forward(x_cpu, fidelity), codes(ref_rt, x_cpu)
    dev_rt = FaceRuntime(str(ckpt), device=str(device), precision="fp32", batch_size=len(crops))
    x = batch_tensor(crops, device)
    fp32_out, fp32_codes = dev_rt.forward(x, fidelity), codes(dev_rt, x)
    diff = float((fp32_out.cpu() - ref_out).abs().max())
    changed = int((fp32_codes != ref_codes).sum())
    report["fp32_vs_cpu"] = {"max_abs_diff": diff, "codes_changed": changed, "codes": int(ref_codes.numel())}
    if diff > 1e-4:
        failures.append(f"{device.type} fp32 differs from CPU fp32 by {diff:.2e} (> 1e-4)")
    for precision in ("bf16", "fp16"):
        if device.type == "cpu" and precision == "fp16":
            continue  # refused on CPUs by design
        rt = FaceRuntime(str(ckpt), device=str(device), precision=precision, batch_size=len(crops))
        out, got = rt.forward(x, fidelity), codes(rt, x)
        n = int((got != fp32_codes).sum())
        report[f"{precision}_vs_fp32"] = {"codes_changed": n, "psnr_db": round(psnr(out, fp32_out), 2)}
        if n:
            failures.append(f"{precision} changed {n} codes")
        del rt

    # 2. speed -------------------------------------------------------------------------------------
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    speed = []
    for precision in ("fp32", "bf16", "fp16"):
        if device.type == "cpu" and precision == "fp16":
            continue
        rt = FaceRuntime(str(ckpt), device=str(device), precision=precision)
        for b in (int(v) for v in args.batches.split(",")):
            xb = batch_tensor([crops[i % len(crops)] for i in range(b)], device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                seconds = timed(rt, xb, fidelity, args.repeats)
            except torch.OutOfMemoryError:
                speed.append({"precision": precision, "batch": b, "error": "out of memory"})
                continue
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
            speed.append({"precision": precision, "batch": b, "ms_per_face": 1000 * seconds / b, "peak_gib": peak})
        del rt
    report["speed"] = speed

    print(f"device: {report['device']}, published VQFRv2 (random weights)" if not args.small else "tiny VQFRv2")
    print(f"fp32 vs CPU: max |diff| {diff:.2e}, codes changed {changed}/{ref_codes.numel()}")
    for precision in ("bf16", "fp16"):
        if f"{precision}_vs_fp32" in report:
            r = report[f"{precision}_vs_fp32"]
            print(f"{precision} vs fp32: codes changed {r['codes_changed']}, PSNR {r['psnr_db']} dB")
    for row in speed:
        if "error" in row:
            print(f"{row['precision']:5s} batch {row['batch']:3d}: {row['error']}")
        else:
            peak = "" if row["peak_gib"] is None else f"  peak {row['peak_gib']:.2f} GiB"
            print(f"{row['precision']:5s} batch {row['batch']:3d}: {row['ms_per_face']:9.2f} ms/face{peak}")
    print(json.dumps({**report, "failures": failures}))
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

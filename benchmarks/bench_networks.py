"""Inference speed of the networks and of the deformable convolution.

Prints times and ratios against a baseline measured in the same process:

* VQFRv2 at fidelity 0 (main branch skipped) vs fidelity 1, at the published or a tiny size;
* the deformable conv at several column-memory budgets vs the plain conv of the same size
  (the cost of deformable sampling), with peak memory where CUDA is available, and
  torchvision's compiled ``deform_conv2d`` when torchvision happens to be importable.

    python benchmarks/bench_networks.py                 # tiny network, 64 px, CPU
    python benchmarks/bench_networks.py --published     # 83M-parameter VQFRv2 at 512 px
    python benchmarks/bench_networks.py --device cuda --half --published
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vqfr.nn.checkpoint import build_network
from vqfr.nn.configs import published_config, tiny_config
from vqfr.nn.deform_conv import deform_conv2d


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench_fidelity(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    size = 512 if args.published else 64
    cfg = published_config("VQFRv2") if args.published else tiny_config("VQFRv2")
    torch.manual_seed(0)
    net = build_network("VQFRv2", cfg).to(device=device, dtype=dtype).eval()
    x = torch.rand(args.batch, 3, size, size, device=device, dtype=dtype) * 2 - 1
    with torch.inference_mode():
        full = timed(lambda: net(x, fidelity_ratio=1.0), device, args.repeats)
        texture = timed(lambda: net(x, fidelity_ratio=0.0), device, args.repeats)
    print(f"VQFRv2 {size}px batch {args.batch} {dtype} on {device}:")
    print(f"  fidelity 1.0 (baseline)   {full * 1000:9.1f} ms")
    print(f"  fidelity 0.0 (no main)    {texture * 1000:9.1f} ms   ratio {texture / full:.2f}x of baseline")


def bench_deform(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    c, size = (64, 512) if args.published else (32, 128)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, size, size, generator=g).to(device, dtype)
    weight = (torch.randn(c, c, 3, 3, generator=g) * 0.05).to(device, dtype)
    offset = (torch.randn(1, 2 * 4 * 9, size, size, generator=g) * 2).to(device, dtype)
    mask = torch.rand(1, 4 * 9, size, size, generator=g).to(device, dtype)
    with torch.inference_mode():
        base = timed(lambda: F.conv2d(x, weight, padding=1), device, args.repeats)
        print(f"deformable conv {c}ch {size}x{size} {dtype} on {device}:")
        print(f"  plain conv2d (baseline)   {base * 1000:9.1f} ms")
        try:  # the compiled kernel the published code used, where it can be imported (never a dependency)
            from torchvision.ops import deform_conv2d as tv_deform_conv2d
        except Exception:
            print("  torchvision.ops.deform_conv2d: not importable here, skipped")
        else:
            tv = timed(lambda: tv_deform_conv2d(x, offset, weight, None, padding=1, mask=mask), device, args.repeats)
            print(f"  torchvision deform_conv2d {tv * 1000:9.1f} ms   ratio {tv / base:6.1f}x")
        for budget_mb in (16, 64, 256, 1024):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()

            def run(budget=budget_mb * 2**20):
                return deform_conv2d(x, offset, weight, None, padding=1, mask=mask, max_column_bytes=budget)

            t = timed(run, device, args.repeats)
            peak = f"   peak {torch.cuda.max_memory_allocated() / 2**20:7.0f} MiB" if device.type == "cuda" else ""
            print(f"  deform, {budget_mb:4d} MiB budget {t * 1000:9.1f} ms   ratio {t / base:6.1f}x{peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", action="store_true", help="published sizes (512 px) instead of tiny ones")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="float16 (CUDA) / bfloat16 (CPU)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.half else torch.float32
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bench_fidelity(args, device, dtype)
    bench_deform(args, device, dtype)


if __name__ == "__main__":
    main()

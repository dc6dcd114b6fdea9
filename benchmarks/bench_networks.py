"""Inference speed of the networks and of the deformable convolution.

Prints times and ratios against a baseline measured in the same process:

* VQFRv2 at fidelity 0 (main branch skipped) vs fidelity 1, at the published or a tiny size;
* the deformable conv at several column-memory budgets vs the plain conv of the same size
  (the cost of deformable sampling), with peak memory where CUDA is available, and
  torchvision's compiled ``deform_conv2d`` when torchvision happens to be importable.

    python benchmarks/bench_networks.py                 # tiny network, 64 px, CPU
    python benchmarks/bench_networks.py --published     # 83M-parameter VQFRv2 at 512 px
    python benchmarks/bench_networks.py --device cuda --half --published
    python benchmarks/bench_networks.py --compare-ref HEAD~3   # this code vs a git revision's, CPU

``--compare-ref REV`` loads the network code of git revision ``REV`` (``git archive`` into a
temporary folder, imported with the current ``vqfr`` modules set aside) next to the current code,
gives both the same random published-size VQFRv2 weights (with noise so every branch contributes),
prepares them as each revision's runtime does (the current one: ``prepare_for_inference``, and
glibc keeps freed memory while it runs; the reference: its reduced parts cast to bfloat16 for
bf16) and prints, measured interleaved in one process (best of ``--repeats``), old / new time
ratios for fp32 and bf16 at fidelity 0.5 and 0, with the differences: max |new - old| in fp32,
and for bf16 the codes that differ from the reference's fp32 codes and the PSNR against its fp32
output.
"""

from __future__ import annotations

import argparse
import copy
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vqfr.nn.checkpoint import build_network
from vqfr.nn.configs import published_config, tiny_config
from vqfr.nn.deform_conv import deform_conv2d
from vqfr.nn.registry import architecture
from vqfr.restore.runtime import keep_freed_memory, prepare_for_inference

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / ".." / "shared" / "data" / "real_lq" / "aligned"
CASES = (("fp32", 0.5), ("fp32", 0.0), ("bf16", 0.5), ("bf16", 0.0))  # --compare-ref: (precision, fidelity)


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


def import_reference(rev: str, folder: Path) -> tuple:
    """``(build_network, architecture)`` of the ``vqfr`` package at git revision ``rev``.

    The current ``vqfr`` modules are set aside while the old tree is imported and put back after,
    so both live in one process; objects built by the old code keep their own module globals.
    """
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "vqfr"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    ours = {name: mod for name, mod in sys.modules.items() if name == "vqfr" or name.startswith("vqfr.")}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        from vqfr.nn.checkpoint import build_network as ref_build
        from vqfr.nn.registry import architecture as ref_architecture
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == "vqfr" or n.startswith("vqfr.")]:
            del sys.modules[name]
        sys.modules.update(ours)
    return ref_build, ref_architecture


def load_face(size: int) -> torch.Tensor:
    """The first shared real aligned face in [-1, 1] (random pixels where the shared data is absent)."""
    files = sorted(FACE.glob("*.png"))
    if not files:
        return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(files[0])), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two [-1, 1] images on the 0..255 scale (clamped to the image range)."""
    mse = float((((a.clamp(-1, 1) - b.clamp(-1, 1)) * 127.5) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(torch.log10(torch.tensor(255.0**2 / mse)))


def compare_reference(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ref_build, ref_architecture = import_reference(args.compare_ref, Path(tmp))
    size = 512 if args.published or not args.tiny else 64
    cfg = tiny_config("VQFRv2") if args.tiny else published_config("VQFRv2")
    torch.manual_seed(0)
    base = build_network("VQFRv2", cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn(p.shape, generator=g) * args.noise)
    nets = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        new = prepare_for_inference(copy.deepcopy(base), architecture("VQFRv2").reduced_parts, dtype)
        old = ref_build("VQFRv2", cfg).eval()
        old.load_state_dict(base.state_dict())
        for name in ref_architecture("VQFRv2").reduced_parts if dtype != torch.float32 else ():
            old.get_submodule(name).to(dtype)
        nets[precision] = {"old": old, "new": new}
    x = load_face(size)

    def run(which: str, precision: str, fidelity: float) -> dict:
        with torch.inference_mode():
            return nets[precision][which](x, fidelity_ratio=fidelity)

    print(f"VQFRv2 {size}px, this tree vs {args.compare_ref}, {torch.get_num_threads()} threads, "
          f"CPU {torch.backends.cpu.get_cpu_capability()}, weight noise {args.noise}")
    ref = {f: run("old", "fp32", f) for f in (0.5, 0.0)}
    codes = ref[0.5]["quant_logit"].argmax(-1)
    print(f"  reference fp32 output range [{float(ref[0.5]['main_dec'].min()):.2f}, "
          f"{float(ref[0.5]['main_dec'].max()):.2f}]")
    for f in (0.5, 0.0):
        diff = float((run("new", "fp32", f)["main_dec"] - ref[f]["main_dec"]).abs().max())
        print(f"  fp32 fidelity {f:g}: max |new - old| {diff:.2e}")
    for which in ("old", "new"):
        out = run(which, "bf16", 0.5)
        changed = int((out["quant_logit"].float().argmax(-1) != codes).sum())
        print(f"  bf16 fidelity 0.5, {which}: {changed} codes differ from fp32, "
              f"PSNR vs fp32 {psnr_db(out['main_dec'].float(), ref[0.5]['main_dec']):.1f} dB")
    def timed_run(which: str, precision: str, fidelity: float) -> None:
        keep_freed_memory(which == "new")  # process-wide: the reference runs with glibc's defaults
        run(which, precision, fidelity)

    cases = {}
    for precision, fidelity in CASES:
        for which in ("old", "new"):
            cases[(precision, fidelity, which)] = lambda w=which, p=precision, f=fidelity: timed_run(w, p, f)
    best = {key: float("inf") for key in cases}
    for _ in range(args.repeats + 1):  # the first round warms up and is not counted
        for key, fn in cases.items():
            t = time.perf_counter()
            fn()
            if _ > 0:
                best[key] = min(best[key], time.perf_counter() - t)
    print(f"| case | {args.compare_ref} | this tree | speed-up (old / new) |")
    print("|---|---|---|---|")
    for precision, fidelity in CASES:
        old, new = best[(precision, fidelity, "old")], best[(precision, fidelity, "new")]
        print(f"| {precision} fidelity {fidelity:g} | {old:.2f} s | {new:.2f} s | {old / new:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", action="store_true", help="published sizes (512 px) instead of tiny ones")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="float16 (CUDA) / bfloat16 (CPU)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-ref", metavar="REV", help="time this network code against git revision REV's")
    parser.add_argument("--tiny", action="store_true", help="with --compare-ref: the tiny network at 64 px")
    parser.add_argument("--noise", type=float, default=0.01, help="with --compare-ref: weight noise (std)")
    args = parser.parse_args()
    if args.compare_ref:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        compare_reference(args)
        return
    device = torch.device(args.device)
    dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.half else torch.float32
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bench_fidelity(args, device, dtype)
    bench_deform(args, device, dtype)


if __name__ == "__main__":
    main()

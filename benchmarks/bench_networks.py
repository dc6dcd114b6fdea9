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
    python benchmarks/bench_networks.py --published-code ../VQFR  # vs the published code (see below)
    python benchmarks/bench_networks.py --compile parts  # torch.compile vs eager, CPU

The comparisons below give both sides the same random published-size VQFRv2 weights (seeded,
plus noise of std ``--noise`` so offsets, masks and fusion all contribute), feed them one real
aligned face (``shared/data/real_lq/aligned``, random pixels without it), prepare this tree's
network as its runtime does (``prepare_for_inference``: reduced parts in bfloat16 for bf16,
channels-last weights; glibc keeps freed memory while it runs, as the commands set it) and time
every case interleaved in one process, best of ``--repeats`` after a warm-up round.

``--compare-ref REV`` loads the network code of git revision ``REV`` (``git archive`` into a
temporary folder, imported with the current ``vqfr`` modules set aside) next to the current code,
prepared as that revision's runtime did (its ``prepare_for_inference`` and glibc setting where it
has them, else its reduced parts cast for bf16 and glibc's defaults) and prints old / new time ratios for
fp32 and bf16 at fidelity 0.5 and 0, with the differences: max |new - old| in fp32, and for bf16
the codes that differ from the reference's fp32 codes and the PSNR against its fp32 output.

``--published-code PATH`` does the same against the published implementation, a checkout of
https://github.com/TencentARC/VQFR at ``PATH`` (its ``vqfr`` package is imported with ours set
aside; only its network modules are loaded). It prints max |this tree - published| for fp32 at
fidelity 0.5, 0 and 1, the codes and PSNR of this tree's bf16 against the published fp32 output,
and the speed-ups against the issue's targets (fp32 0.5 >= 1.8x, fidelity 0 >= 4x, bf16 0.5 >= 3x;
the published code always runs fp32: torchvision's CPU ``deform_conv2d`` has no bfloat16 kernel).
The published code needs torchvision, which this project's environment never has, so it runs in
a separate one that imports this tree through ``PYTHONPATH`` (``/tmp/pubenv`` is any path):

    python3 -m venv /tmp/pubenv
    /tmp/pubenv/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu
    /tmp/pubenv/bin/pip install einops scikit-learn opencv-python-headless numpy pyyaml pillow scipy
    /tmp/pubenv/bin/pip install --no-deps timm   # the published code only imports trunc_normal_ from it
    git clone https://github.com/TencentARC/VQFR ../VQFR   # no build step: its CUDA extension is not needed
    PYTHONPATH=. /tmp/pubenv/bin/python benchmarks/bench_networks.py --published-code ../VQFR --threads 1

``--compile whole|parts`` times ``torch.compile`` (inductor; on a CPU it needs a C++ compiler) of
the whole network or of its parts (:func:`compiled_copy`) against eager, for fp32 and the
runtime's bf16 at fidelity 0.5: the first call (compiling), the steady-state speed-up and how many
faces it takes to earn the compile time back, with the outputs' agreement.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import warnings
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
# --published-code: (precision of this tree, fidelity, target speed-up over the published fp32 code; issue 11)
PUBLISHED_ROWS = (("fp32", 0.5, 1.8), ("fp32", 0.0, 4.0), ("fp32", 1.0, None), ("bf16", 0.5, 3.0), ("bf16", 0.0, None))
PUBLISHED_FIDELITIES = (0.5, 0.0, 1.0)


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


@contextlib.contextmanager
def other_vqfr(folder: Path):
    """Import another ``vqfr`` package from ``folder`` inside the block; ours is set aside and put back after.

    Both then live in one process: objects built by the other code keep their own module globals.
    """
    ours = {name: mod for name, mod in sys.modules.items() if name == "vqfr" or name.startswith("vqfr.")}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == "vqfr" or n.startswith("vqfr.")]:
            del sys.modules[name]
        sys.modules.update(ours)


def import_reference(rev: str, folder: Path) -> tuple[type, tuple[str, ...], object]:
    """Git revision ``rev``'s ``VQFRv2`` class, reduced-precision parts and ``prepare_for_inference`` (or None).

    The tree is extracted into ``folder``. The class is imported while the old tree is in place:
    the registry names its classes as ``"module:Class"`` and imports them on first use, which after
    the swap back would be ours.
    """
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "vqfr"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    with other_vqfr(folder):
        from vqfr.nn.registry import architecture as ref_architecture

        arch = ref_architecture("VQFRv2")
        network_class = arch.network_class()
        source = Path(sys.modules[network_class.__module__].__file__).resolve()
        prepare = getattr(importlib.import_module("vqfr.restore.runtime"), "prepare_for_inference", None)
    if not source.is_relative_to(folder.resolve()):
        raise SystemExit(f"{rev}: its VQFRv2 class came from {source}, not from that revision")
    return network_class, arch.reduced_parts, prepare


def import_published(checkout: Path) -> type:
    """The ``VQFRv2`` class of the published code, from a checkout of TencentARC/VQFR at ``checkout``.

    The published package's ``__init__`` files import its whole training stack (data, losses,
    models, and a ``version.py`` that only its ``setup.py`` writes), so empty packages stand in
    for them: only the network modules and what they import are loaded (``archs/vqfrv2_arch.py``,
    ``vqganv2_arch.py``, ``quantizer_arch.py``, ``utils/registry.py``, ``logger.py``,
    ``dist_util.py`` and ``ops/dcn``, whose compiled extension is optional on import).
    """
    if not (checkout / "vqfr" / "archs" / "vqfrv2_arch.py").is_file():
        raise SystemExit(f"{checkout}: no vqfr/archs/vqfrv2_arch.py there (expected a checkout of TencentARC/VQFR)")
    with other_vqfr(checkout), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # distutils' and timm's deprecation warnings
        for name in ("vqfr", "vqfr.archs", "vqfr.utils", "vqfr.ops"):
            package = types.ModuleType(name)
            package.__path__ = [str(checkout.joinpath(*name.split(".")))]
            sys.modules[name] = package
        utils = sys.modules["vqfr.utils"]
        utils.all_gather = importlib.import_module("vqfr.utils.dist_util").all_gather
        utils.get_root_logger = importlib.import_module("vqfr.utils.logger").get_root_logger
        try:
            return importlib.import_module("vqfr.archs.vqfrv2_arch").VQFRv2
        except ImportError as e:
            raise SystemExit(f"importing the published code: {e} (build its environment as the --help says)") from e


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


def noisy_vqfrv2(cfg: dict, noise: float) -> torch.nn.Module:
    """This tree's float32 VQFRv2 with seeded random weights plus noise (std ``noise``).

    The initialisation zeroes biases, the deformable convs' offset convs and the norms' shifts;
    the noise makes every branch (offsets, masks, fusion) contribute, as trained weights do.
    """
    torch.manual_seed(0)
    base = build_network("VQFRv2", cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    return base


def prepared(base: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``base`` as this tree's runtime runs it in ``dtype`` (its reduced parts cast, channels last)."""
    return prepare_for_inference(copy.deepcopy(base), architecture("VQFRv2").reduced_parts, dtype)


def infer(net, x: torch.Tensor, fidelity: float, ours: bool = True) -> dict:
    """One forward pass without autograd, the C library's memory reuse set as each side's runtime has it."""
    keep_freed_memory(ours)  # process-wide: this tree's commands turn it on; other code runs with glibc's defaults
    with torch.inference_mode():
        return net(x, fidelity_ratio=fidelity)


def best_interleaved(cases: dict, repeats: int) -> dict:
    """Best time of every case (name -> callable) over ``repeats`` rounds that each run all cases once.

    A first round warms up and is not counted; interleaving spreads any load from other processes
    over all cases alike.
    """
    best = {key: float("inf") for key in cases}
    for round_ in range(repeats + 1):
        for key, fn in cases.items():
            t = time.perf_counter()
            fn()
            if round_ > 0:
                best[key] = min(best[key], time.perf_counter() - t)
    return best


def codes_changed(out: dict, codes: torch.Tensor) -> int:
    return int((out["quant_logit"].float().argmax(-1) != codes).sum())


def max_diff(a: dict, b: dict) -> float:
    return float((a["main_dec"].float() - b["main_dec"].float()).abs().max())


def header(what: str, size: int = 512) -> str:
    """The first line of a comparison; "this tree" is the ``vqfr`` imported (``PYTHONPATH=.`` for a worktree)."""
    here = Path(sys.modules["vqfr"].__file__).parent.parent
    return (f"VQFRv2 {size}px batch 1, {what}; this tree: {here}; {torch.get_num_threads()} thread(s), "
            f"torch {torch.__version__}, CPU {torch.backends.cpu.get_cpu_capability()}")


def compare_reference(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ref_class, ref_reduced_parts, ref_prepare = import_reference(args.compare_ref, Path(tmp))
    size = 64 if args.tiny else 512
    cfg = tiny_config("VQFRv2") if args.tiny else published_config("VQFRv2")
    base = noisy_vqfrv2(cfg, args.noise)
    nets = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        old = ref_class(**copy.deepcopy(cfg)).eval()
        old.load_state_dict(base.state_dict())
        if ref_prepare is not None:
            old = ref_prepare(old, ref_reduced_parts, dtype)
        else:
            for name in ref_reduced_parts if dtype != torch.float32 else ():
                old.get_submodule(name).to(dtype)
        nets[precision] = {"old": old, "new": prepared(base, dtype)}
    x = load_face(size)

    def run(which: str, precision: str, fidelity: float) -> dict:
        # A revision with prepare_for_inference also has keep_freed_memory, which its commands turn on.
        return infer(nets[precision][which], x, fidelity, ours=which == "new" or ref_prepare is not None)

    print(header(f"this tree vs {args.compare_ref} (weight noise {args.noise})", size))
    ref = {f: run("old", "fp32", f) for f in (0.5, 0.0)}
    codes = ref[0.5]["quant_logit"].argmax(-1)
    print(f"  reference fp32 output range [{float(ref[0.5]['main_dec'].min()):.2f}, "
          f"{float(ref[0.5]['main_dec'].max()):.2f}]")
    for f in (0.5, 0.0):
        print(f"  fp32 fidelity {f:g}: max |new - old| {max_diff(run('new', 'fp32', f), ref[f]):.2e}")
    for which in ("old", "new"):
        out = run(which, "bf16", 0.5)
        print(f"  bf16 fidelity 0.5, {which}: {codes_changed(out, codes)} codes differ from fp32, "
              f"PSNR vs fp32 {psnr_db(out['main_dec'].float(), ref[0.5]['main_dec']):.1f} dB")
    cases = {(p, f, w): lambda w=w, p=p, f=f: run(w, p, f) for p, f in CASES for w in ("old", "new")}
    best = best_interleaved(cases, args.repeats)
    print(f"| case | {args.compare_ref} | this tree | speed-up (old / new) |")
    print("|---|---|---|---|")
    for precision, fidelity in CASES:
        old, new = best[(precision, fidelity, "old")], best[(precision, fidelity, "new")]
        print(f"| {precision} fidelity {fidelity:g} | {old:.2f} s | {new:.2f} s | {old / new:.2f}x |", flush=True)


def compare_published(args: argparse.Namespace) -> None:
    published_vqfrv2 = import_published(Path(args.published_code).resolve())
    cfg = published_config("VQFRv2")
    base = noisy_vqfrv2(cfg, args.noise)
    pub = published_vqfrv2(**copy.deepcopy(cfg)).eval()
    pub.load_state_dict(base.state_dict())  # strict: this tree's keys are the released checkpoints' layout
    ours = {"fp32": prepared(base, torch.float32), "bf16": prepared(base, torch.bfloat16)}
    del base
    x = load_face(512)
    print(header(f"this tree vs the published code at {args.published_code} (weight noise {args.noise})"))
    print(f"  published: fp32, NCHW, torchvision {importlib.import_module('torchvision').__version__} "
          "deform_conv2d (no bfloat16 kernel on the CPU); this tree: its runtime's preparation and memory setting")
    ref = {f: infer(pub, x, f, ours=False) for f in PUBLISHED_FIDELITIES}
    codes = ref[0.5]["quant_logit"].argmax(-1)
    print(f"  published fp32 output range [{float(ref[0.5]['main_dec'].min()):.2f}, "
          f"{float(ref[0.5]['main_dec'].max()):.2f}]")
    for f in PUBLISHED_FIDELITIES:
        out = infer(ours["fp32"], x, f)
        print(f"  fp32 fidelity {f:g}: max |this tree - published| {max_diff(out, ref[f]):.2e}, "
              f"{codes_changed(out, codes)} of {codes.numel()} codes differ")
    for f in (0.5, 0.0):
        out = infer(ours["bf16"], x, f)
        print(f"  this tree bf16 fidelity {f:g}: {codes_changed(out, codes)} codes differ from published fp32, "
              f"PSNR vs published fp32 {psnr_db(out['main_dec'].float(), ref[f]['main_dec']):.1f} dB")
    cases = {("published", f): lambda f=f: infer(pub, x, f, ours=False) for f in PUBLISHED_FIDELITIES}
    cases.update({(p, f): lambda p=p, f=f: infer(ours[p], x, f) for p, f, _ in PUBLISHED_ROWS})
    best = best_interleaved(cases, args.repeats)
    print(f"best of {args.repeats}, interleaved:")
    print("| case (this tree) | published (fp32) | this tree | speed-up | target |")
    print("|---|---|---|---|---|")
    for precision, fidelity, target in PUBLISHED_ROWS:
        old, new = best[("published", fidelity)], best[(precision, fidelity)]
        goal = f">= {target:g}x ({'met' if old / new >= target else 'missed'})" if target else "-"
        print(f"| {precision} fidelity {fidelity:g} | {old:.2f} s | {new:.2f} s | {old / new:.2f}x | {goal} |",
              flush=True)


def compiled_copy(base: torch.nn.Module, dtype: torch.dtype, scope: str) -> torch.nn.Module:
    """A prepared copy of ``base`` with ``torch.compile`` applied to the whole network or to its ``parts``.

    ``parts``: the encoder, the texture decoder and, per main-branch level, the offset convs, the
    upsampling conv and the fusion block; the deformable convs stay eager (their band loops would
    unroll into thousands of graph nodes).
    """
    net = prepared(base, dtype)
    if scope == "whole":
        return torch.compile(net, dynamic=False)
    # One compiled code object serves every block of a class; each map size is one more variant.
    torch._dynamo.config.recompile_limit = 64
    main = net.main_branch
    parts = [net.encoder, net.decoder, *main.pre_upsample_dict.values(), *main.decoder_dict.values()]
    for align in main.align_func_dict.values():
        parts += [align.offset_conv1, align.offset_conv2]
    for part in parts:
        part.compile(dynamic=False)  # in place: same module tree and keys
    return net


def compare_compiled(args: argparse.Namespace) -> None:
    """torch.compile (inductor, CPU) against eager, this tree only: compile time, steady state, agreement."""
    size = 64 if args.tiny else 512
    cfg = tiny_config("VQFRv2") if args.tiny else published_config("VQFRv2")
    base = noisy_vqfrv2(cfg, args.noise)
    x = load_face(size)
    print(header(f"torch.compile ({args.compile}, inductor) vs eager at fidelity 0.5", size))
    eager, compiled, first = {}, {}, {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        eager[precision] = prepared(base, dtype)
        compiled[precision] = compiled_copy(base, dtype, args.compile)
        t = time.perf_counter()
        try:
            out = infer(compiled[precision], x, 0.5)
        except Exception as e:  # report, do not hide: compiling is the experiment
            print(f"  {precision}: torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0]}")
            del compiled[precision]
            continue
        first[precision] = time.perf_counter() - t
        ref = infer(eager[precision], x, 0.5)
        print(f"  {precision}: first call (compiling) {first[precision]:.1f} s; max |compiled - eager| "
              f"{max_diff(out, ref):.2e} (PSNR {psnr_db(out['main_dec'].float(), ref['main_dec'].float()):.1f} dB), "
              f"{codes_changed(out, ref['quant_logit'].argmax(-1))} codes differ", flush=True)
    cases = {(p, "eager"): lambda p=p: infer(eager[p], x, 0.5) for p in eager}
    cases.update({(p, "compiled"): lambda p=p: infer(compiled[p], x, 0.5) for p in compiled})
    best = best_interleaved(cases, args.repeats)
    print("| fidelity 0.5 | eager | compiled | speed-up | compile time / time saved per face |")
    print("|---|---|---|---|---|")
    for p in compiled:
        e, c = best[(p, "eager")], best[(p, "compiled")]
        payback = f"{first[p] / (e - c):.0f} faces" if e > c else "never"
        print(f"| {p} | {e:.2f} s | {c:.2f} s | {e / c:.2f}x | {payback} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", action="store_true", help="published sizes (512 px) instead of tiny ones")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="float16 (CUDA) / bfloat16 (CPU)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, e.g. from OMP_NUM_THREADS)")
    parser.add_argument("--compare-ref", metavar="REV", help="time this network code against git revision REV's")
    parser.add_argument(
        "--published-code", metavar="PATH", help="time this network code against a checkout of TencentARC/VQFR"
    )
    parser.add_argument(
        "--compile", choices=("whole", "parts"), help="time torch.compile of the whole network or its parts vs eager"
    )
    parser.add_argument("--tiny", action="store_true", help="with --compare-ref/--compile: the tiny network at 64 px")
    parser.add_argument("--noise", type=float, default=0.01, help="with --compare-ref etc.: weight noise (std)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or max(1, torch.get_num_threads()))
    if args.compare_ref:
        compare_reference(args)
    elif args.published_code:
        compare_published(args)
    elif args.compile:
        compare_compiled(args)
    else:
        device = torch.device(args.device)
        dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.half else torch.float32
        bench_fidelity(args, device, dtype)
        bench_deform(args, device, dtype)


if __name__ == "__main__":
    main()

"""The inference runtime: does reduced precision keep the codes, and what do precision, batch and backend cost?

Sections (``--sections``, comma separated; all by default):

* ``accuracy``: on the real aligned faces in ``shared/data/real_lq/aligned`` (resized to the
  network's size), for random published-size VQFRv2 weights and for a small random net: how
  many of the predicted codes differ from float32 (also counting only codes whose float32 top-2
  logit gap is above 1e-3, i.e. not a near tie), and the PSNR of the restored face against the
  float32 one, for the runtime's bf16 (decoders in bf16, encoder and code selection in float32)
  and, for contrast, for the whole network cast to bf16.
* ``precision``: time per face, fp32 vs bf16, at fidelity 0 / 0.5 / 1.
* ``batch``: time per face at batch 1, 2 and 4 (fp32 and bf16, fidelity 0.5).
* ``onnx``: onnxruntime vs PyTorch fp32 (fidelity 0.5, and 0 where PyTorch skips the main branch).

Times are measured in one process with the candidates interleaved, best of ``--repeats``,
so a busy machine slows all of them alike; the ratios are what to compare.

    python benchmarks/bench_runtime.py                        # published size, CPU
    python benchmarks/bench_runtime.py --sections accuracy --small
    python benchmarks/bench_runtime.py --checkpoint weights.pth   # trained VQFRv2 weights instead of random
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vqfr.nn.checkpoint import build_network, save_checkpoint
from vqfr.nn.configs import published_config, tiny_config
from vqfr.restore.runtime import DEFAULT_FACE_SIZE, FaceRuntime, export_onnx, peek_metadata
from vqfr.utils.image_tensor import tensor_to_uint8

FACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real_lq" / "aligned"
FIDELITIES = (0.0, 0.5, 1.0)


def load_faces(size: int) -> torch.Tensor:
    files = sorted(FACES.glob("*.png"))
    if not files:
        raise SystemExit(f"no aligned faces in {FACES}")
    imgs = []
    for f in files:
        rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        imgs.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1


def make_checkpoint(folder: Path, small: bool) -> tuple[Path, int]:
    """Random weights saved as one of our checkpoints: published VQFRv2 (512 px) or the tiny one (64 px)."""
    torch.manual_seed(0)
    config = tiny_config("VQFRv2") if small else published_config("VQFRv2")
    net = build_network("VQFRv2", config)
    if small:  # as in the tests: noise on every weight so every branch contributes
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    size = 64 if small else 512
    path = folder / ("tiny" if small else "published") / "vqfr_v2.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, net, arch="VQFRv2", config=config, extra={"face_size": size})
    return path, size


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = tensor_to_uint8(a).astype(np.float64), tensor_to_uint8(b).astype(np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def run_net(net, x, fidelity):
    with torch.inference_mode():
        out = net(x, fidelity_ratio=fidelity)
    return out["quant_logit"].float(), out["main_dec"].float()


def accuracy(path: Path, size: int, label: str) -> None:
    faces = load_faces(size)
    fp32 = FaceRuntime(str(path), device="cpu", precision="fp32")
    bf16 = FaceRuntime(str(path), device="cpu", precision="bf16")
    all_bf16 = copy.deepcopy(fp32.net).to(torch.bfloat16)  # what --half used to do on a CPU, for contrast
    print(f"\n## accuracy vs fp32, {label}, {len(faces)} real faces at {size} px")
    print("| face | fidelity | variant | changed codes | changed with gap > 1e-3 | min top-2 gap | PSNR vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for i in range(len(faces)):
        x = faces[i : i + 1]
        for fidelity in FIDELITIES:
            logits, ref = run_net(fp32.net, x, fidelity)
            top2 = logits.topk(2, dim=-1).values
            gap = top2[..., 0] - top2[..., 1]
            codes = logits.argmax(-1)
            variants = [("runtime bf16", bf16.net)] + ([("all bf16", all_bf16)] if fidelity == 0.5 else [])
            for name, net in variants:
                got_logits, got = run_net(net, x.to(torch.bfloat16) if name == "all bf16" else x, fidelity)
                changed = got_logits.argmax(-1) != codes
                print(
                    f"| {i} | {fidelity:g} | {name} | {int(changed.sum())} / {codes.numel()} | "
                    f"{int((changed & (gap > 1e-3)).sum())} | {float(gap.min()):.2e} | {psnr(got, ref):.1f} dB |",
                    flush=True,
                )


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def interleaved(cases: dict, repeats: int) -> dict[str, float]:
    """Best time of each zero-argument callable, run in turn ``repeats`` times after one warm-up round."""
    best = {name: float("inf") for name in cases}
    for fn in cases.values():
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def precision_speed(path: Path, size: int, repeats: int) -> None:
    x = load_faces(size)[:1]
    rts = {p: FaceRuntime(str(path), device="cpu", precision=p) for p in ("fp32", "bf16")}
    print(f"\n## time per face, fp32 vs runtime bf16 ({size} px, {torch.get_num_threads()} threads, best of {repeats})")
    print("| fidelity | fp32 | bf16 | fp32 / bf16 |")
    print("|---|---|---|---|")
    for fidelity in FIDELITIES:
        cases = {p: (lambda rt=rt, f=fidelity: rt.forward(x, f)) for p, rt in rts.items()}
        t = interleaved(cases, repeats)
        print(f"| {fidelity:g} | {fmt(t['fp32'])} | {fmt(t['bf16'])} | {t['fp32'] / t['bf16']:.2f}x |", flush=True)


def batch_speed(path: Path, size: int, repeats: int, batches=(1, 2, 4)) -> None:
    faces = load_faces(size)
    x = torch.cat([faces] * (max(batches) // len(faces) + 1))
    print(f"\n## time per face against batch size ({size} px, fidelity 0.5, best of {repeats})")
    print("| precision | " + " | ".join(f"batch {b}" for b in batches) + " | batch 1 / best |")
    print("|---|" + "---|" * (len(batches) + 1))
    for precision in ("fp32", "bf16"):
        rt = FaceRuntime(str(path), device="cpu", precision=precision)
        cases = {b: (lambda b=b, rt=rt: rt.forward(x[:b], 0.5)) for b in batches}
        t = {b: v / b for b, v in interleaved(cases, repeats).items()}
        cells = " | ".join(fmt(t[b]) for b in batches)
        print(f"| {precision} | {cells} | {t[batches[0]] / min(t.values()):.2f}x |", flush=True)


def onnx_speed(path: Path, size: int, repeats: int, folder: Path) -> None:
    x = load_faces(size)[:1]
    torch_rt = FaceRuntime(str(path), device="cpu", precision="fp32")
    bf16_rt = FaceRuntime(str(path), device="cpu", precision="bf16")
    t = time.perf_counter()
    onnx_path = export_onnx(copy.deepcopy(torch_rt.net), "VQFRv2", folder / "model.onnx", size)
    export_s = time.perf_counter() - t
    ort_rt = FaceRuntime(str(onnx_path), backend="onnxruntime")
    diff = float((ort_rt.forward(x, 0.5) - torch_rt.forward(x, 0.5)).abs().max())
    print(f"\n## onnxruntime vs PyTorch ({size} px, export {export_s:.0f} s, max |ort - torch fp32| {diff:.1e})")
    print("| fidelity | batch | torch fp32 | torch bf16 | onnxruntime fp32 | torch fp32 / onnxruntime |")
    print("|---|---|---|---|---|---|")
    for fidelity, batch in ((0.5, 1), (0.0, 1)):
        xb = x[:batch]
        cases = {
            "torch": lambda f=fidelity, xb=xb: torch_rt.forward(xb, f),
            "bf16": lambda f=fidelity, xb=xb: bf16_rt.forward(xb, f),
            "ort": lambda f=fidelity, xb=xb: ort_rt.forward(xb, f),
        }
        t = {k: v / batch for k, v in interleaved(cases, repeats).items()}
        print(
            f"| {fidelity:g} | {batch} | {fmt(t['torch'])} | {fmt(t['bf16'])} | {fmt(t['ort'])} | "
            f"{t['torch'] / t['ort']:.2f}x |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="accuracy,precision,batch,onnx")
    parser.add_argument("--small", action="store_true", help="timing sections on the tiny net (64 px) only")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a VQFRv2 checkpoint (Predict mode) to measure")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small_path, small_size = make_checkpoint(folder, small=True)
        if args.checkpoint:
            path, size = args.checkpoint, int(peek_metadata(args.checkpoint).get("face_size") or DEFAULT_FACE_SIZE)
        else:
            path, size = (small_path, small_size) if args.small else make_checkpoint(folder, small=False)
        cpu = torch.backends.cpu.get_cpu_capability()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu}")
        if "accuracy" in sections:
            if not args.small:
                accuracy(path, size, str(args.checkpoint) if args.checkpoint else "random published-size VQFRv2")
            accuracy(small_path, small_size, "small random VQFRv2")
        if "precision" in sections:
            precision_speed(path, size, args.repeats)
        if "batch" in sections:
            batch_speed(path, size, max(1, args.repeats - 1))
        if "onnx" in sections:
            onnx_speed(path, size, args.repeats, folder)


if __name__ == "__main__":
    main()

"""``vqfr export``: write a restoration network as an ONNX model (for onnxruntime and other engines),
or as a half-size PyTorch checkpoint (float16 weights, e.g. for shipping inside the package)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a restoration network to ONNX or a float16 checkpoint",
        description=(
            "Write MODEL (a zoo name or a checkpoint) as an ONNX graph (--format onnx): input 'image' "
            "(N x 3 x S x S, float32 in [-1, 1], any batch size N), for VQFR v2 input 'fidelity' (a float32 "
            "scalar in [0, 1]), output 'restored' (N x 3 x S x S); run it with `vqfr restore --backend "
            "onnxruntime --model OUT.onnx`. Or (--format fp16) as a checkpoint of the generator alone with "
            "float16 weights, half the size; it loads into a float32 network like any checkpoint."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="VQFR_v2, VQFR_v1, or the path of a checkpoint")
    p.add_argument("output", metavar="OUT", help="the file to write, .onnx or .pth by --format (replaced if it exists)")
    p.add_argument(
        "--format", default="onnx", choices=list(SUFFIXES), help="onnx (default), or fp16: a float16 .pth checkpoint"
    )
    p.add_argument("--weights", default=None, metavar="PATH", help="weights file for MODEL (no lookup, no download)")
    p.add_argument(
        "--face-size", type=int, default=None, metavar="S", help="input size (default: from the checkpoint, else 512)"
    )
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset, at least 16 (default 17)")
    p.add_argument("--no-download", action="store_true", help="never download weights (fail with where to put them)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.set_defaults(func=run)


SUFFIXES = {"onnx": ".onnx", "fp16": ".pth"}  # export format -> the output's file name ending


def run(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from vqfr.errors import VQFRError
    from vqfr.utils.atomic import create_temp
    from vqfr.utils.paths import blocking_file, shown

    out = Path(args.output).expanduser()
    suffix = SUFFIXES[args.format]
    if out.suffix.lower() != suffix:
        raise VQFRError(f"output {shown(out)} must end in {suffix} for --format {args.format}")
    if out.is_dir():
        raise VQFRError(f"output {shown(out)} is a folder; give a file name ending in {suffix}")
    if args.opset < 16:
        raise VQFRError(f"--opset {args.opset}: ONNX has GridSample (the deformable convolution) from opset 16 on")
    blocked = blocking_file(out.parent)
    if blocked is not None:
        raise VQFRError(f"cannot write {shown(out)}: {shown(blocked)} is a file")
    try:  # writable? find out before loading and tracing the network
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temp(out)
        os.close(fd)
        tmp.unlink()
    except OSError as err:
        raise VQFRError(f"cannot write {shown(out)} ({err.strerror or err})") from None

    from vqfr.nn.checkpoint import load_network
    from vqfr.restore.runtime import default_face_size, export_half, export_onnx, peek_metadata
    from vqfr.restore.zoo import resolve_weights

    start = time.perf_counter()
    resolved = resolve_weights(args.model, args.weights, download=not args.no_download, progress=not args.quiet)
    net, arch, config = load_network(resolved.path, arch=resolved.model.arch if resolved.model else None)
    size = args.face_size or peek_metadata(resolved.path).get("face_size") or default_face_size(arch)
    if args.format == "fp16":
        export_half(net, arch, config, out, int(size))
        what = "float16 weights"
    else:
        export_onnx(net, arch, out, int(size), opset=args.opset, metadata={"source": resolved.path.name})
        what = f"opset {args.opset}"
    if not args.quiet:
        mib = out.stat().st_size / 2**20
        print(
            f"wrote {shown(out)} ({arch}, {size} px, {what}, {mib:.1f} MiB) in {time.perf_counter() - start:.1f}s",
            file=sys.stderr,
        )
    return 0

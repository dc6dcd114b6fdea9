"""Options that `vqfr restore` and `vqfr video` share: which network runs, how, and which detector.

Declared once so both commands spell, default and explain them the same way; ``restorer_kwargs``
turns them into :class:`vqfr.FaceRestorer` arguments. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from vqfr.face.detectors import DEFAULT_DETECTOR, DETECTORS

# The model names every command that restores accepts (restore, video, serve).
MODEL_NAMES_HELP = (
    "auto (default: VQFR_v2 when it is here or downloadable, else the bundled VQFR_lite where this vqfr has it), "
    "VQFR_v2, VQFR_v1, VQFR_lite"
)


def add_network_options(p: argparse.ArgumentParser, batch_help: str) -> None:
    """--model, --weights, --fidelity, --device, --precision, --backend, --batch-size, --no-download, -q."""
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help=f"{MODEL_NAMES_HELP}, the path of a checkpoint (its network is read from the file), "
        "or with --backend onnxruntime an .onnx file",
    )
    p.add_argument("--weights", default=None, metavar="PATH", help="weights file for --model (no lookup, no download)")
    p.add_argument(
        "--fidelity",
        "-f",
        type=float,
        default=None,
        metavar="F",
        help="v2 only, in [0, 1]: 0 = most detail, 1 = most faithful to the input (default 0.5)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="number format of the decoders: auto (default) = bf16 on CPUs with native bf16 and on GPUs that "
        "have it, fp16 on other GPUs, fp32 elsewhere; codes are always chosen in fp32",
    )
    p.add_argument("--half", action="store_true", help=argparse.SUPPRESS)  # deprecated: --precision fp16
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnxruntime"],
        help="torch (default), or onnxruntime on the CPU (--model may then be an .onnx file from vqfr export)",
    )
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help=batch_help)
    p.add_argument("--no-download", action="store_true", help="never download weights (fail with where to put them)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar; print only errors")


def notices(args: argparse.Namespace) -> Callable[[str], None]:
    """A ``say(message)`` that prints to stderr unless ``-q`` was given."""

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    return say


def add_face_options(p: argparse.ArgumentParser, small_faces: str) -> None:
    """--detector and --min-eye-distance (``small_faces`` says what happens to faces below it)."""
    p.add_argument(
        "--min-eye-distance",
        type=float,
        default=8.0,
        metavar="PX",
        help=f"{small_faces} faces whose eyes are closer than this many pixels (default 8)",
    )
    p.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=list(DETECTORS),
        help="face detector: "
        + "; ".join(f"{name}: {entry.description}" for name, entry in DETECTORS.items())
        + f" (default {DEFAULT_DETECTOR})",
    )


def precision_from_args(args: argparse.Namespace) -> str:
    """``--precision``, with the deprecated ``--half`` mapped onto it (and a note saying so)."""
    precision = args.precision
    if args.half:
        notices(args)("note: --half is deprecated; use --precision fp16")
        if precision == "auto":
            from vqfr.utils.device import select_device

            precision = "fp16" if select_device(args.device).type == "cuda" else "auto"
    return precision


def restorer_kwargs(args: argparse.Namespace, precision: str) -> dict:
    """The :class:`vqfr.FaceRestorer` arguments these options set.

    Called by the commands that restore, in their own process, so this is also where that process
    lets glibc keep freed memory for reuse (:func:`vqfr.restore.runtime.keep_freed_memory`:
    1.12-1.16x per face on a CPU; the process keeps its peak memory until it exits).
    """
    from vqfr.restore.runtime import keep_freed_memory
    from vqfr.restore.zoo import DEFAULT_MODEL

    keep_freed_memory()
    return dict(
        model=args.model or DEFAULT_MODEL,
        weights=args.weights,
        device=args.device,
        precision=precision,
        backend=args.backend,
        fidelity=args.fidelity,
        batch_size=args.batch_size,
        min_eye_distance=args.min_eye_distance,
        detector=args.detector,
        download=not args.no_download,
        progress=not args.quiet,
    )

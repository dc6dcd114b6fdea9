"""``vqfr restore``: restore the faces in photos (a thin layer over :class:`vqfr.FaceRestorer`).

Under torchrun (``torchrun --nproc_per_node G -m vqfr.restore -i ... -o ...``, same options) every
process restores its share of the inputs on its own device and rank 0 writes ``results.json``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from vqfr.cli.options import (
    add_face_options,
    add_network_options,
    notices,
    precision_from_args,
    restorer_kwargs,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore",
        help="restore faces in photos (whole images or aligned face crops)",
        description=(
            "Detect, align and restore every face, paste them back into the (upscaled) photo. "
            "Writes OUTDIR/cropped_faces, restored_faces, cmp, restored_imgs and results.json."
        ),
    )
    p.add_argument("-i", "--input", required=True, help="an image, a folder of images, or a quoted glob pattern")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help="output folder (not inside the folder of any input)"
    )
    p.add_argument("-r", "--recursive", action="store_true", help="also look in sub-folders of an input folder")
    p.add_argument("--aligned", action="store_true", help="inputs are already 512x512 FFHQ-aligned face crops")
    add_network_options(p, "faces per forward pass (default: 1 on a CPU, 4 on a GPU)")
    p.add_argument(
        "--upscale", "-s", type=float, default=2.0, metavar="S", help="final scale of the whole image (default 2)"
    )
    p.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the image centre")
    p.add_argument(
        "--ext",
        default="auto",
        choices=["auto", "png", "jpg", "webp", "bmp", "tiff"],
        help="format of restored_imgs: auto keeps the input's (default)",
    )
    p.add_argument(
        "--suffix", default=None, help="added to restored image and face file names (no path separators or '..')"
    )
    add_face_options(p, "skip (and report)")
    p.add_argument(
        "--max-pixels",
        type=float,
        default=None,
        metavar="N",
        help="refuse images (input or output) above N pixels (default 100e6; 0 = no limit)",
    )
    p.add_argument("--bg-upsampler", choices=["lanczos", "realesrgan"], default="lanczos", help="background upscaling")
    p.add_argument("--bg-weights", default=None, metavar="PATH", help="Real-ESRGAN weights (RealESRGAN_x2plus.pth)")
    p.add_argument(
        "--skip-done",
        action="store_true",
        help="resume: leave out inputs that earlier runs into OUTDIR finished (their files are all there); "
        "results.json still lists every input",
    )
    p.set_defaults(func=run)


# How long the ranks of a torchrun run wait for each other (at the end, for the slowest one). A rank
# that dies ends the run through torchrun, not through this.
RANKS_WAIT = timedelta(days=7)


def run(args: argparse.Namespace) -> int:
    from vqfr.utils.dist import world_size
    from vqfr.utils.lock import output_folder_lock

    if world_size() > 1:
        return _run_ranks(args)
    say = notices(args)
    inputs, max_pixels = _prepare(args)
    # Create, check and lock the output folder before the slow model loading: an unwritable folder or
    # one another run is writing into fails now, not after minutes of work.
    with output_folder_lock(args.output, "vqfr restore"):
        restorer = _restorer(args, max_pixels, say)
        say(f"{restorer.runtime.describe()}; {len(inputs.files)} input(s)")
        report = _restore(args, restorer, inputs, say)
    return _finish(args, report, say)


def _run_ranks(args: argparse.Namespace) -> int:
    """One of several torchrun processes: each restores a share of the inputs on its own device.

    Every step that can fail is taken together, so a problem on any rank stops them all at once
    with one message (from rank 0). Rank 0 prints the notes and the summary.
    """
    from contextlib import ExitStack

    from vqfr.utils.dist import StoppedByOtherRank, cleanup, init_distributed, together
    from vqfr.utils.lock import join_folder_lock, output_folder_lock

    info = init_distributed("cpu" if args.backend == "onnxruntime" else args.device, "gloo", RANKS_WAIT)
    main = info.is_main
    say = notices(args) if main else (lambda msg: None)
    try:
        with ExitStack() as stack:
            inputs, max_pixels = together(lambda: _prepare(args), info, main_only=True)
            command = f"vqfr restore, rank 0 of {info.world_size}"
            together(lambda: stack.enter_context(output_folder_lock(args.output, command, True)), info, True)
            together(lambda: None if main else stack.enter_context(join_folder_lock(args.output)), info)
            restorer = None

            def build(first: bool) -> None:
                nonlocal restorer
                if (info.local_rank == 0) == first:
                    restorer = _restorer(args, max_pixels, say, info.device)

            # one process per machine first: weights that need downloading are fetched once per machine
            together(lambda: build(True), info)
            together(lambda: build(False), info)
            say(f"{restorer.runtime.describe()}; {len(inputs.files)} input(s) over {info.world_size} processes")
            report = _restore(args, restorer, inputs, say, info)
        return _finish(args, report, say, show_failures=main)
    except StoppedByOtherRank:
        return 2  # rank 0 says why
    finally:
        cleanup()


def _prepare(args: argparse.Namespace):
    """The inputs and the pixel limit, after the checks that can fail before the model loads."""
    from pathlib import Path

    from vqfr.errors import VQFRError
    from vqfr.io import DEFAULT_MAX_PIXELS
    from vqfr.restore.batch import check_output_folder, check_suffix, collect_inputs

    inputs = collect_inputs(args.input, recursive=args.recursive)
    check_output_folder(Path(args.output), inputs)  # before any slow model loading
    check_suffix(args.suffix)
    if args.max_pixels is None:
        max_pixels = DEFAULT_MAX_PIXELS
    elif args.max_pixels < 0:
        raise VQFRError(f"--max-pixels must be positive (or 0 for no limit), got {args.max_pixels:g}")
    else:
        max_pixels = int(args.max_pixels) or None
    return inputs, max_pixels


def _restorer(args: argparse.Namespace, max_pixels: int | None, say, device=None):
    """The :class:`FaceRestorer` the options ask for (on ``device``, if given, instead of ``--device``)."""
    from vqfr.errors import VQFRError
    from vqfr.restore.pipeline import FaceRestorer

    precision = precision_from_args(args)
    bg = None
    if args.bg_upsampler == "realesrgan":
        if not args.bg_weights:
            raise VQFRError("--bg-upsampler realesrgan needs --bg-weights PATH (e.g. RealESRGAN_x2plus.pth)")
        from vqfr.restore.background import RealESRGANUpsampler

        bg = RealESRGANUpsampler(args.bg_weights, device=device or args.device, half=precision == "fp16")
    kwargs = restorer_kwargs(args, precision)
    kwargs["detector"] = None if args.aligned else args.detector
    if device is not None:
        kwargs["device"] = device
    restorer = FaceRestorer(
        **kwargs,
        upscale=args.upscale,
        only_center_face=args.only_center_face,
        bg_upsampler=bg,
        max_pixels=max_pixels,
    )
    if restorer.model_reason:
        say(restorer.model_reason)
    for note in restorer.notes:
        say(f"note: {note}")
    return restorer


def _restore(args: argparse.Namespace, restorer, inputs, say, ranks=None) -> dict:
    from vqfr.restore.batch import BatchOptions, run_batch

    options = BatchOptions(aligned=args.aligned, ext=args.ext, suffix=args.suffix)
    progress = not args.quiet and sys.stderr.isatty() and (ranks is None or ranks.is_main)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    return run_batch(restorer, inputs, args.output, options, progress, log, skip_done=args.skip_done, ranks=ranks)


def _finish(args: argparse.Namespace, report: dict, say, show_failures: bool = True) -> int:
    """Print the summary line (and the failures); the exit status: 1 if any input failed."""
    from vqfr.utils.paths import shown

    s = report["summary"]
    line = (
        f"{s['processed']} input(s): {s['restored']} restored ({s['faces']} faces"
        + (f", {s['skipped_faces']} too small/skipped" if s["skipped_faces"] else "")
        + f"), {s['no_face']} without faces, {s['failed']} failed in {s['seconds']:.1f}s"
        + (f" ({s['reused']} done by an earlier run)" if s["reused"] else "")
        + f"; results in {shown(args.output)}"
    )
    if s["failed"]:
        if show_failures:
            print(line, file=sys.stderr)
            for failure in s["failures"]:
                print(f"  failed: {failure['error']}", file=sys.stderr)
        return 1
    say(line)
    return 0

"""``vqfr restore``: restore the faces in photos (a thin layer over :class:`vqfr.FaceRestorer`)."""

from __future__ import annotations

import argparse
import sys

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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vqfr.errors import VQFRError
    from vqfr.io import DEFAULT_MAX_PIXELS
    from vqfr.restore.batch import check_output_folder, check_suffix, collect_inputs
    from vqfr.utils.lock import output_folder_lock

    say = notices(args)

    inputs = collect_inputs(args.input, recursive=args.recursive)
    check_output_folder(Path(args.output), inputs)  # before any slow model loading
    check_suffix(args.suffix)
    if args.max_pixels is None:
        max_pixels = DEFAULT_MAX_PIXELS
    elif args.max_pixels < 0:
        raise VQFRError(f"--max-pixels must be positive (or 0 for no limit), got {args.max_pixels:g}")
    else:
        max_pixels = int(args.max_pixels) or None
    # Create, check and lock the output folder before the slow model loading: an unwritable folder or
    # one another run is writing into fails now, not after minutes of work.
    with output_folder_lock(args.output, "vqfr restore"):
        return _restore(args, inputs, max_pixels, say)


def _restore(args: argparse.Namespace, inputs, max_pixels: int | None, say) -> int:
    from vqfr.errors import VQFRError
    from vqfr.restore.batch import BatchOptions, run_batch
    from vqfr.restore.pipeline import FaceRestorer
    from vqfr.utils.paths import shown

    precision = precision_from_args(args)
    bg = None
    if args.bg_upsampler == "realesrgan":
        if not args.bg_weights:
            raise VQFRError("--bg-upsampler realesrgan needs --bg-weights PATH (e.g. RealESRGAN_x2plus.pth)")
        from vqfr.restore.background import RealESRGANUpsampler

        bg = RealESRGANUpsampler(args.bg_weights, device=args.device, half=precision == "fp16")
    kwargs = restorer_kwargs(args, precision)
    kwargs["detector"] = None if args.aligned else args.detector
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
    say(f"{restorer.runtime.describe()}; {len(inputs.files)} input(s)")
    options = BatchOptions(aligned=args.aligned, ext=args.ext, suffix=args.suffix)
    progress = not args.quiet and sys.stderr.isatty()
    report = run_batch(
        restorer, inputs, args.output, options, progress=progress, log=lambda m: print(m, file=sys.stderr)
    )
    s = report["summary"]
    line = (
        f"{s['processed']} input(s): {s['restored']} restored ({s['faces']} faces"
        + (f", {s['skipped_faces']} too small/skipped" if s["skipped_faces"] else "")
        + f"), {s['no_face']} without faces, {s['failed']} failed in {s['seconds']:.1f}s;"
        + f" results in {shown(args.output)}"
    )
    if s["failed"]:
        print(line, file=sys.stderr)
        for failure in s["failures"]:
            print(f"  failed: {failure['error']}", file=sys.stderr)
        return 1
    say(line)
    return 0

"""``vqfr video``: restore the faces in a video (a thin layer over :class:`vqfr.VideoRestorer`)."""

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
        "video",
        help="restore faces in a video (audio copied unchanged)",
        description=(
            "Decode the video, track the faces across frames, smooth their landmarks over time so the "
            "restored faces do not flicker, restore and paste them back, and encode the result (H.264 "
            "by default) with every audio stream copied unchanged. The output is written to a temporary "
            "file and renamed at the end: it appears complete or not at all. Needs PyAV: "
            'pip install "vqfr[video]".'
        ),
    )
    p.add_argument("-i", "--input", required=True, help="the video file")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output video: .mp4, .m4v, .mov or .mkv")
    add_network_options(p, "faces per forward pass, across frames (default: 1 on a CPU, 4 on a GPU)")
    p.add_argument("--upscale", "-s", type=float, default=1.0, metavar="S", help="scale of the video (default 1)")
    add_face_options(p, "leave as they are")
    p.add_argument(
        "--no-smooth",
        action="store_true",
        help="restore every frame with its own detections (no tracks, smoothing or gap bridging; flickers more)",
    )
    p.add_argument("--start", type=float, default=None, metavar="SEC", help="begin this many seconds in")
    p.add_argument("--duration", type=float, default=None, metavar="SEC", help="restore only this many seconds")
    p.add_argument(
        "--codec", default="libx264", help="video encoder (default libx264: H.264 yuv420p, plays everywhere)"
    )
    p.add_argument(
        "--crf",
        type=float,
        default=18,
        help="quality for x264/x265/vp9/av1, 0-51 (lower is better; default 18, visually lossless)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqfr.utils.paths import shown
    from vqfr.video.io import VideoSource, check_output_path
    from vqfr.video.restorer import check_codec

    say = notices(args)

    # Everything that can be checked is checked before the slow model loading.
    check_output_path(args.output, args.input)
    check_codec(args.codec, args.crf)
    with VideoSource(args.input, start=args.start, duration=args.duration) as source:
        info = source.info

    from vqfr.restore.pipeline import FaceRestorer
    from vqfr.video.restorer import VideoRestorer

    restorer = FaceRestorer(**restorer_kwargs(args, precision_from_args(args)), upscale=args.upscale)
    if restorer.model_reason:
        say(restorer.model_reason)
    for note in restorer.notes:
        say(f"note: {note}")
    fps = f"{float(info.fps):.3g} fps" if info.fps else "unknown frame rate"
    say(
        f"model {restorer.model_name} ({restorer.arch}) on {restorer.device}; "
        f"{shown(args.input)}: {info.width}x{info.height}, {fps}, {info.audio_streams} audio stream(s)"
    )
    video = VideoRestorer(restorer, smooth=not args.no_smooth)
    report = video.restore(
        args.input,
        args.output,
        start=args.start,
        duration=args.duration,
        codec=args.codec,
        crf=args.crf,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    for note in report.notes:
        if note not in restorer.notes:
            say(f"note: {note}")
    rate = report.frames / report.seconds if report.seconds else 0.0
    say(
        f"{report.frames} frames ({report.frames_with_faces} with faces, {report.faces} faces in "
        f"{report.tracks} track(s)) in {report.seconds:.1f}s ({rate:.2f} frames/s); "
        f"{report.out_size[0]}x{report.out_size[1]} written to {shown(args.output)}"
    )
    return 0

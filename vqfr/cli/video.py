"""``vqfr video``: restore the faces in a video (a thin layer over :class:`vqfr.VideoRestorer`)."""

from __future__ import annotations

import argparse
import sys

from vqfr.face.detectors import DEFAULT_DETECTOR, DETECTORS


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
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help="VQFR_v2 (default), VQFR_v1, or the path of a checkpoint (its network is read from the file)",
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
    p.add_argument("--upscale", "-s", type=float, default=1.0, metavar="S", help="scale of the video (default 1)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--half", action="store_true", help="float16 inference on CUDA (faster, less memory)")
    p.add_argument(
        "--batch-size", type=int, default=4, metavar="N", help="faces per forward pass, across frames (default 4)"
    )
    p.add_argument(
        "--min-eye-distance",
        type=float,
        default=8.0,
        metavar="PX",
        help="leave faces whose eyes are closer than this many pixels as they are (default 8)",
    )
    p.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=list(DETECTORS),
        help="face detector: "
        + "; ".join(f"{name}: {entry.description}" for name, entry in DETECTORS.items())
        + f" (default {DEFAULT_DETECTOR})",
    )
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
    p.add_argument("--no-download", action="store_true", help="never download weights (fail with where to put them)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar; print only errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqfr.utils.paths import shown
    from vqfr.video.io import VideoSource, check_output_path
    from vqfr.video.restorer import check_codec

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    # Everything that can be checked is checked before the slow model loading.
    check_output_path(args.output, args.input)
    check_codec(args.codec, args.crf)
    with VideoSource(args.input, start=args.start, duration=args.duration) as source:
        info = source.info

    from vqfr.restore.pipeline import FaceRestorer
    from vqfr.restore.zoo import DEFAULT_MODEL
    from vqfr.video.restorer import VideoRestorer

    restorer = FaceRestorer(
        model=args.model or DEFAULT_MODEL,
        weights=args.weights,
        device=args.device,
        half=args.half,
        upscale=args.upscale,
        fidelity=args.fidelity,
        batch_size=args.batch_size,
        min_eye_distance=args.min_eye_distance,
        detector=args.detector,
        download=not args.no_download,
        progress=not args.quiet,
    )
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

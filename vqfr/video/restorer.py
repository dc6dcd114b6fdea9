"""``VideoRestorer``: restore the faces in a video, frame by frame, with temporally stable alignment.

The loop streams: decode a frame, detect its faces, hand them to the :class:`FaceTracker`, and keep
the frame in a small look-ahead buffer until its smoothed landmarks are final; finished frames are
gathered until ``batch_size`` faces (or frames) are waiting, their faces go through the network
together, and the frames are pasted, encoded and dropped. Memory holds at most ``lookahead +
batch_size`` frames whatever the length of the video. Audio packets are copied as they are read.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vqfr.errors import VQFRError
from vqfr.face.align import affine_scale, align_face
from vqfr.face.paste import paste_face
from vqfr.io import check_pixel_limit
from vqfr.utils.atomic import create_temp
from vqfr.utils.paths import shown
from vqfr.video.io import (
    CONTAINERS,
    DEFAULT_CODEC,
    DEFAULT_CRF,
    DecodedFrame,
    VideoSink,
    VideoSource,
    check_output_path,
    even_size,
)
from vqfr.video.tracking import FaceTracker

CROP_SIZE = 512

# (frame index, [(track id, landmarks (5, 2) in upright frame pixels), ...]) for every frame written
FrameCallback = Callable[[int, list], None]


@dataclass
class VideoReport:
    """What :meth:`VideoRestorer.restore` did."""

    input: str
    output: str
    frames: int
    frames_with_faces: int
    faces: int
    tracks: int
    seconds: float
    size: tuple[int, int]  # upright input size
    out_size: tuple[int, int]
    fps: float | None
    audio_streams: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def check_codec(codec: str, crf: float) -> None:
    """A one-line error for an encoder PyAV's FFmpeg does not have, or a CRF out of range."""
    from vqfr.video.io import _av

    av = _av()
    try:
        c = av.Codec(codec, "w")
    except Exception:
        raise VQFRError(f"unknown video encoder {codec!r} (try libx264, libx265, libvpx-vp9 or mpeg4)") from None
    if c.type != "video":
        raise VQFRError(f"{codec!r} is an {c.type} encoder, not a video encoder")
    if not (isinstance(crf, (int, float)) and math.isfinite(crf) and 0 <= crf <= 63):
        raise VQFRError(f"--crf must be in [0, 63] (lower is better quality; 18 looks lossless), got {crf}")


class VideoRestorer:
    """Restore the faces of videos with a :class:`~vqfr.FaceRestorer`.

    Args:
        restorer: the photo restorer to use (its detector, network, upscale, fidelity, batch size and
            minimum eye distance apply); None builds one from ``restorer_kwargs``.
        smooth: temporal stabilisation (tracks, Gaussian landmark smoothing, gap bridging, still
            faces kept still); False restores every frame with its own detections.
        sigma: Gaussian standard deviation in frames; max_gap: frames a lost face is bridged over;
        still_tolerance: see :class:`~vqfr.video.tracking.FaceTracker`.
    """

    def __init__(
        self,
        restorer=None,
        *,
        smooth: bool = True,
        sigma: float = 1.5,
        max_gap: int = 3,
        still_tolerance: float = 0.01,
        **restorer_kwargs,
    ):
        if restorer is None:
            from vqfr.restore.pipeline import FaceRestorer

            restorer = FaceRestorer(**restorer_kwargs)
        elif restorer_kwargs:
            raise TypeError(f"pass FaceRestorer options or a restorer, not both: {sorted(restorer_kwargs)}")
        self.restorer = restorer
        self.smooth = bool(smooth)
        self.sigma = sigma
        self.max_gap = max_gap
        self.still_tolerance = still_tolerance
        FaceTracker(smooth, sigma, max_gap, still_tolerance)  # check the settings now

    def restore(
        self,
        input: str | os.PathLike,
        output: str | os.PathLike,
        *,
        start: float | None = None,
        duration: float | None = None,
        codec: str = DEFAULT_CODEC,
        crf: float = DEFAULT_CRF,
        fidelity: float | None = None,
        progress: bool = False,
        on_frame: FrameCallback | None = None,
    ) -> VideoReport:
        """Restore ``input`` into the video file ``output`` (.mp4, .m4v, .mov or .mkv).

        The output appears complete or not at all: it is written to a hidden temporary file beside it
        and renamed at the end; an error or Ctrl-C deletes the temporary file.
        """
        began = time.perf_counter()
        out = check_output_path(output, input)
        check_codec(codec, crf)
        with VideoSource(input, start=start, duration=duration) as source:
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp = create_temp(out, suffix=".tmp" + out.suffix)
            except OSError as err:
                raise VQFRError(f"cannot write {shown(output)}: {err.strerror or err}") from None
            os.close(fd)
            try:
                report = self._run(source, tmp, out, codec, crf, fidelity, progress, on_frame)
                os.replace(tmp, out)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        report.input, report.output = str(input), str(output)
        report.seconds = round(time.perf_counter() - began, 3)
        return report

    # ------------------------------------------------------------------ internals
    def _run(self, source: VideoSource, tmp: Path, out: Path, codec, crf, fidelity, progress, on_frame) -> VideoReport:
        from tqdm import tqdm

        r = self.restorer
        scale = float(r.upscale)
        tracker = FaceTracker(self.smooth, self.sigma, self.max_gap, self.still_tolerance)
        notes = list(getattr(r, "notes", []))
        notes += [f"{what} not copied (only video and audio are)" for what in source.info.dropped_streams]
        if not getattr(r, "has_fidelity", True) and fidelity is not None:
            notes.append(f"fidelity is ignored: {r.arch} has no fidelity control")
        state = {"frames": 0, "with_faces": 0, "faces": 0}
        sink: VideoSink | None = None
        early_audio: list = []
        pending: deque[tuple[DecodedFrame, list]] = deque()  # decoded, waiting for look-ahead
        ready: list[tuple[DecodedFrame, list]] = []  # landmarks final, waiting for the network
        size = out_size = padded = None
        bar = tqdm(total=source.expected_frames, unit="frame", disable=not progress, dynamic_ncols=True, leave=False)

        def flush() -> None:
            crops, affines = [], []
            for frame, faces in ready:
                for _, lm in faces:
                    crop, affine = align_face(frame.rgb, lm, CROP_SIZE)
                    crops.append(crop)
                    affines.append(affine)
            restored = r.restore_crops(crops, fidelity) if crops else []
            k = 0
            for frame, faces in ready:
                canvas = _resize(frame.rgb, out_size)
                placed = list(zip(affines[k : k + len(faces)], restored[k : k + len(faces)]))
                k += len(faces)
                # smallest first, so where faces overlap the larger one ends on top
                for affine, face in sorted(placed, key=lambda p: affine_scale(p[0])):
                    paste_face(canvas, face, affine, scale)
                if padded != out_size:
                    canvas = np.pad(
                        canvas, ((0, padded[1] - out_size[1]), (0, padded[0] - out_size[0]), (0, 0)), mode="edge"
                    )
                sink.write(canvas, frame.pts)
                if on_frame is not None:
                    on_frame(frame.index, [(tid, lm.copy()) for tid, lm in faces])
                state["frames"] += 1
                state["with_faces"] += bool(faces)
                state["faces"] += len(faces)
                bar.update(1)
            ready.clear()

        def finish_ready_frames() -> None:
            while pending and tracker.ready(pending[0][0].index):
                frame, _ = pending.popleft()
                ready.append((frame, tracker.resolve(frame.index)))
                if sum(len(f) for _, f in ready) >= r.batch_size or len(ready) >= max(r.batch_size, 1):
                    flush()

        try:
            for kind, item in source.read():
                if kind == "audio":
                    if sink is None:
                        early_audio.append(item)
                    else:
                        sink.copy_audio(item)
                    continue
                frame: DecodedFrame = item
                h, w = frame.rgb.shape[:2]
                if sink is None:
                    size = (w, h)
                    out_size = (max(1, round(w * scale)), max(1, round(h * scale)))
                    check_pixel_limit(out_size[0], out_size[1], getattr(r, "max_pixels", None), what="output frame")
                    padded = even_size(*out_size)
                    if padded != out_size:
                        notes.append(
                            f"output frame padded from {out_size[0]}x{out_size[1]} to {padded[0]}x{padded[1]} "
                            "(yuv420p needs an even width and height)"
                        )
                    sink = VideoSink(
                        tmp, source, padded, frame.rotation, offset_pts=_offset(source),
                        codec=codec, crf=crf, container_format=CONTAINERS[out.suffix.lower()],
                    )  # fmt: skip
                    for packet in early_audio:
                        sink.copy_audio(packet)
                    early_audio.clear()
                elif (w, h) != size:
                    raise VQFRError(f"frame {frame.index} is {w}x{h} but the video started at {size[0]}x{size[1]}")
                faces = [f for f in r.detector.detect(frame.rgb) if f.eye_distance >= r.min_eye_distance]
                tracker.add(frame.index, faces)
                pending.append((frame, faces))
                finish_ready_frames()
            if sink is None:
                span = "" if source.start == 0 and source.end is None else " in the chosen part"
                raise VQFRError(f"{shown(source.path)} has no video frames{span}")
            tracker.finish()
            finish_ready_frames()
            flush()
            sink.close()
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        finally:
            bar.close()
        info = source.info
        return VideoReport(
            input="",
            output="",
            frames=state["frames"],
            frames_with_faces=state["with_faces"],
            faces=state["faces"],
            tracks=tracker.tracks_started,
            seconds=0.0,
            size=size,
            out_size=padded,
            fps=float(info.fps) if info.fps else None,
            audio_streams=info.audio_streams,
            notes=notes,
        )


def _offset(source: VideoSource) -> int:
    """Timestamps are kept as they are, except that a part (``--start``) starts at 0."""
    if source.start == 0:
        return 0
    return int(round(source.start / source.info.time_base))


def _resize(rgb: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) == out_size:
        return rgb.copy()
    interp = cv2.INTER_AREA if out_size[0] < rgb.shape[1] else cv2.INTER_LANCZOS4
    return cv2.resize(rgb, out_size, interpolation=interp)


__all__ = ["VideoReport", "VideoRestorer", "check_codec"]

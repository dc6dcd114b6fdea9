"""Streaming video decode and encode with PyAV (FFmpeg inside its wheels: no system ffmpeg, no subprocess).

:class:`VideoSource` demuxes the input once, in file order, and yields decoded video frames and raw
audio packets as they come, so memory does not grow with the length of the video. :class:`VideoSink`
encodes frames and copies audio packets unchanged into the output.

What is kept: every frame's timestamp (so a variable frame rate stays variable) in the input's time
base, the average frame rate, the rotation of the display matrix (multiples of 90 degrees; frames
are turned upright for the detector and turned back before encoding, so the output carries the same
rotation), the sample (pixel) aspect ratio, the colour description (matrix, primaries, transfer,
range), and every audio stream, packet for packet. Not kept: subtitle and data streams, and
mirroring in the display matrix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vqfr.errors import VQFRError
from vqfr.utils.atomic import create_temp
from vqfr.utils.paths import shown

# Output containers by file extension: FFmpeg's muxer name for each.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 18
# codecs whose quality is set with a constant rate factor
_CRF_CODECS = {"libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"}


def _av():
    try:
        import av
    except ImportError as err:  # an optional extra
        raise VQFRError('video needs PyAV: install it with `pip install "vqfr[video]"` (or `pip install av`)') from err
    return av


@dataclass
class VideoInfo:
    """What the input is: its first video stream and the audio streams that will be copied."""

    path: Path
    container: str
    codec: str
    width: int  # as stored (before rotation)
    height: int
    fps: Fraction | None
    time_base: Fraction
    duration: float | None  # seconds
    frames: int | None  # an estimate when the container does not say
    sample_aspect_ratio: Fraction | None
    audio_streams: int
    dropped_streams: list[str] = field(default_factory=list)


@dataclass
class DecodedFrame:
    """One video frame: ``rgb`` upright (rotation undone), its timestamp in ``time_base`` units."""

    index: int
    rgb: np.ndarray
    pts: int
    time: float
    rotation: int  # counter-clockwise degrees (a multiple of 90) the display turns the stored frame


def check_output_path(output: str | os.PathLike, input: str | os.PathLike | None = None) -> Path:
    """Refuse an output that cannot work before any slow work: same file as the input, an existing
    folder, an unknown extension, or a folder that cannot be written. Returns the output path."""
    out = Path(output).expanduser()
    if out.is_dir():
        raise VQFRError(f"output {shown(output)} is a folder; give a file name such as {shown(out / 'restored.mp4')}")
    if out.suffix.lower() not in CONTAINERS:
        raise VQFRError(
            f"output {shown(output)}: unknown video extension {out.suffix or '(none)'!r}; "
            f"use one of {', '.join(CONTAINERS)}"
        )
    if input is not None:
        inp = Path(input).expanduser()
        same = out.resolve() == inp.resolve()
        if not same and out.exists() and inp.exists():
            same = os.path.samefile(out, inp)
        if same:
            raise VQFRError(f"output {shown(output)} is the input; choose another name so the input stays untouched")
    parent = out.resolve().parent
    existing = next(p for p in (parent, *parent.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise VQFRError(f"output {shown(output)} cannot be created: {shown(existing)} is a file")
    try:  # a real probe: permissions, read-only mounts and pseudo file systems all show up here
        fd, probe = create_temp(existing / out.name)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or err
        raise VQFRError(f"output {shown(output)} cannot be written in {shown(existing)}: {reason}") from None
    return out


class VideoSource:
    """Open ``path`` for streaming decode; :meth:`read` yields ``("video", DecodedFrame)`` and
    ``("audio", packet)`` in file order, limited to ``[start, start + duration)`` seconds."""

    def __init__(self, path: str | os.PathLike, start: float | None = None, duration: float | None = None):
        av = _av()
        self.path = Path(path)
        if not self.path.exists():
            raise VQFRError(f"input {shown(path)} does not exist")
        if self.path.is_dir():
            raise VQFRError(f"input {shown(path)} is a folder, not a video file")
        for name, value in (("start", start), ("duration", duration)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise VQFRError(f"--{name} must be a number of seconds >= 0, got {value:g}")
        if duration is not None and duration == 0:
            raise VQFRError("--duration must be more than 0 seconds")
        try:
            self.container = av.open(str(self.path), "r")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
            raise VQFRError(f"{shown(path)} is not a video FFmpeg can read ({_reason(err)})") from None
        try:
            fmt = self.container.format.name
            if not self.container.streams.video or fmt.endswith("_pipe") or fmt in ("image2", "gif"):
                what = "an image" if self.container.streams.video else "a file without a video stream"
                extra = "; restore photos with `vqfr restore`" if self.container.streams.video else ""
                raise VQFRError(f"{shown(path)} is {what} ({fmt}), not a video{extra}")
            self.video = self.container.streams.video[0]
            self.video.thread_type = "AUTO"
            self.audio = list(self.container.streams.audio)
            dropped = [
                f"{s.type} stream {s.index}"
                for s in self.container.streams
                if s is not self.video and s not in self.audio
            ]
            self.info = self._probe(fmt, dropped)
        except BaseException:
            self.container.close()
            raise
        self.start = start or 0.0
        self.end = None if duration is None else self.start + duration
        if self.info.duration is not None and self.start >= self.info.duration:
            self.container.close()
            raise VQFRError(f"--start {self.start:g} s is past the end of the video ({self.info.duration:.2f} s)")

    def _probe(self, fmt: str, dropped: list[str]) -> VideoInfo:
        v = self.video
        fps = v.average_rate or v.guessed_rate
        tb = v.time_base or Fraction(1, 90000)
        if v.duration is not None:
            duration = float(v.duration * tb)
        elif self.container.duration is not None:
            duration = self.container.duration / 1_000_000
        else:
            duration = None
        frames = v.frames or (round(duration * fps) if duration and fps else None)
        ctx = v.codec_context
        return VideoInfo(
            path=self.path,
            container=fmt,
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=Fraction(fps) if fps else None,
            time_base=Fraction(tb),
            duration=duration,
            frames=frames or None,
            sample_aspect_ratio=Fraction(v.sample_aspect_ratio) if v.sample_aspect_ratio else None,
            audio_streams=len(self.audio),
            dropped_streams=dropped,
        )

    @property
    def expected_frames(self) -> int | None:
        """Frames in the part being read (for a progress bar; an estimate)."""
        info = self.info
        if self.start == 0 and self.end is None:
            return info.frames
        if not info.fps:
            return None
        end = info.duration if self.end is None else min(self.end, info.duration or self.end)
        return max(0, round((end - self.start) * info.fps)) if end is not None else None

    def read(self) -> Iterator[tuple[str, object]]:
        av = _av()
        tb = self.info.time_base
        if self.start > 0:
            self.container.seek(int(self.start / tb), stream=self.video, backward=True, any_frame=False)
        index = 0
        next_pts = None
        try:
            # demux ends with an empty packet per stream, which flushes the decoder
            for packet in self.container.demux(self.video, *self.audio):
                if packet.stream.type == "audio":
                    if packet.pts is None or packet.stream.time_base is None:
                        continue
                    t = float(packet.pts * packet.stream.time_base)
                    # whole packets only (no re-encoding): those that start inside the part
                    if (self.start == 0 or t >= self.start - 1e-6) and (self.end is None or t < self.end):
                        yield "audio", packet
                    continue
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else next_pts
                    if pts is None:
                        pts = 0
                    if next_pts is not None and pts < next_pts:  # never go back in time (broken streams)
                        pts = next_pts
                    next_pts = pts + 1
                    t = float(pts * tb)
                    if t < self.start - 1e-6:
                        continue
                    if self.end is not None and t >= self.end - 1e-6:
                        return
                    yield "video", self._frame(frame, index, pts, t)
                    index += 1
        except av.FFmpegError as err:
            raise VQFRError(f"{shown(self.path)}: cannot decode frame {index} ({_reason(err)})") from None

    @staticmethod
    def _frame(frame, index: int, pts: int, t: float) -> DecodedFrame:
        rotation = int(round(getattr(frame, "rotation", 0) or 0))
        rotation = rotation % 360 if rotation % 90 == 0 else 0
        rgb = frame.to_ndarray(format="rgb24")
        if rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
        return DecodedFrame(index, rgb, pts, t, rotation)

    def colour(self) -> dict:
        ctx = self.video.codec_context
        return {k: getattr(ctx, k, None) for k in ("colorspace", "color_range", "color_primaries", "color_trc")}

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoSink:
    """Encode frames (upright RGB, turned back to the input's stored orientation) into ``path`` and
    copy ``source``'s audio packets unchanged. Timestamps are shifted by ``-offset_pts``."""

    def __init__(
        self,
        path: str | os.PathLike,
        source: VideoSource,
        size: tuple[int, int],
        rotation: int,
        offset_pts: int,
        codec: str = DEFAULT_CODEC,
        crf: float = DEFAULT_CRF,
        container_format: str | None = None,
    ):
        av = _av()
        self.path = Path(path)
        self.rotation = rotation
        self.offset_pts = offset_pts
        self.source = source
        info = source.info
        w, h = size  # upright size
        if rotation in (90, 270):
            w, h = h, w
        self.container = av.open(str(self.path), "w", format=container_format)
        try:
            self.video = self.container.add_stream(codec, rate=info.fps or Fraction(25))
            formats = [f.name for f in (self.video.codec_context.codec.video_formats or [])]
            self.video.pix_fmt = "yuv420p" if not formats or "yuv420p" in formats else formats[0]
            self.video.width, self.video.height = w, h
            self.video.time_base = info.time_base
            self.video.codec_context.time_base = info.time_base
            if info.sample_aspect_ratio:
                self.video.codec_context.sample_aspect_ratio = info.sample_aspect_ratio
            for key, value in source.colour().items():
                if value is not None:
                    try:
                        setattr(self.video.codec_context, key, value)
                    except (AttributeError, TypeError, ValueError):  # not settable in this PyAV: keep defaults
                        pass
            if codec in _CRF_CODECS:
                options = {"crf": f"{crf:g}"}
                if codec == "libvpx-vp9":
                    options["b"] = "0"
                self.video.options = options
            if rotation:
                self.video.set_display_rotation(rotation)
            self.audio_map = {}
            for stream in source.audio:
                out = self.container.add_stream_from_template(stream)
                self.audio_map[stream.index] = out
        except BaseException:
            self.container.close()
            raise
        self._audio_offsets = {
            s.index: int(round(source.start / s.time_base)) if source.start and s.time_base else 0 for s in source.audio
        }
        self.frames = 0

    def write(self, rgb: np.ndarray, pts: int) -> None:
        av = _av()
        if self.rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=-(self.rotation // 90)))
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = pts - self.offset_pts
        frame.time_base = self.source.info.time_base
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def copy_audio(self, packet) -> None:
        out = self.audio_map[packet.stream.index]
        shift = self._audio_offsets[packet.stream.index]
        if shift:
            packet.pts = packet.pts - shift
            if packet.dts is not None:
                packet.dts = packet.dts - shift
        packet.stream = out
        self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and write the trailer."""
        for packet in self.video.encode(None):
            self.container.mux(packet)
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # the file is deleted anyway
            pass


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split()) or type(err).__name__


def even_size(width: int, height: int, pix_fmt: str = "yuv420p") -> tuple[int, int]:
    """The size a frame is padded to so that chroma-subsampled formats (yuv420p) can hold it."""
    if pix_fmt.startswith(("yuv420", "yuv422", "nv12")):
        return width + width % 2, height + height % 2
    return width, height


__all__ = ["CONTAINERS", "DecodedFrame", "VideoInfo", "VideoSink", "VideoSource", "check_output_path", "even_size"]

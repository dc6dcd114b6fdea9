"""Short synthetic clips for tests, benchmarks and trying ``vqfr video`` without a video at hand.

A face photo (e.g. an FFHQ-aligned sample) is shrunk and pasted onto a plain background, still or
moving, with an optional sine tone as an AAC audio track. Written with PyAV, like everything here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction

import cv2
import numpy as np

from vqfr.video.io import _av


def face_position(t: int, frames: int, motion: str, room: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the face in frame ``t``: ``still`` in the middle, ``pan`` left to right."""
    rx, ry = room
    if motion == "still":
        return rx // 2, ry // 2
    if motion == "pan":
        return round(rx * t / max(frames - 1, 1)), ry // 2
    raise ValueError(f"motion must be 'still' or 'pan', got {motion!r}")


def make_face_clip(
    path: str | os.PathLike,
    face: np.ndarray,
    frames: int = 20,
    size: tuple[int, int] = (160, 120),
    face_size: int = 80,
    fps: int = 25,
    motion: str = "pan",
    face_frames: Callable[[int], bool] | None = None,
    audio_hz: float | None = 440.0,
    sample_rate: int = 16000,
    noise: float = 0.0,
    rotation: int = 0,
    vfr: bool = False,
    crf: int = 12,
    seed: int = 0,
) -> list[np.ndarray]:
    """Write a clip of ``frames`` frames to ``path`` and return the frames as written (upright RGB).

    ``face`` is an RGB uint8 photo shrunk to ``face_size``; ``face_frames(t)`` says whether frame ``t``
    shows it (default: all). ``noise`` adds Gaussian pixel noise of that standard deviation (a static
    camera's sensor noise). ``rotation`` stores the frames turned by that many degrees with a display
    matrix that turns them back. ``vfr`` gives every other frame twice the duration.
    """
    av = _av()
    rng = np.random.default_rng(seed)
    w, h = size
    small = cv2.resize(np.ascontiguousarray(face), (face_size, face_size), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([60 + 80 * xx / w, 90 + 40 * yy / h, 120 - 40 * xx / w], -1).astype(np.float32)
    out = av.open(str(path), "w")
    try:
        time_base = Fraction(1, fps * 2)
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = (h, w) if rotation in (90, 270) else (w, h)
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"crf": str(crf)}
        if rotation:
            stream.set_display_rotation(rotation)
        audio = None
        if audio_hz:
            audio = out.add_stream("aac", rate=sample_rate)
            audio.layout = "mono"
        written = []
        pts = 0
        for t in range(frames):
            img = background.copy()
            if face_frames is None or face_frames(t):
                x, y = face_position(t, frames, motion, (w - face_size, h - face_size))
                img[y : y + face_size, x : x + face_size] = small
            if noise:
                img += rng.normal(0, noise, img.shape).astype(np.float32)
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            written.append(img)
            stored = np.ascontiguousarray(np.rot90(img, k=-(rotation // 90))) if rotation else img
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = pts
            frame.time_base = time_base
            pts += 4 if (vfr and t % 2) else 2
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if audio is not None:
            total = int(round(pts * time_base * sample_rate))
            chunk = 1024
            for start in range(0, total, chunk):
                n = min(chunk, total - start)
                tone = 0.3 * np.sin(2 * np.pi * audio_hz * (start + np.arange(n)) / sample_rate)
                af = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="flt", layout="mono")
                af.sample_rate = sample_rate
                af.pts = start
                for packet in audio.encode(af):
                    out.mux(packet)
            for packet in audio.encode(None):
                out.mux(packet)
    finally:
        out.close()
    return written


__all__ = ["face_position", "make_face_clip"]

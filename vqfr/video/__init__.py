"""Restore the faces in videos: streaming PyAV decode/encode, face tracks with smoothed landmarks.

``VideoRestorer`` and ``VideoReport`` come from :mod:`vqfr.video.restorer`; :mod:`vqfr.video.tracking`
(tracks, smoothing and the stability figures) needs neither torch nor PyAV.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VideoRestorer": "restorer",
    "VideoReport": "restorer",
    "FaceTracker": "tracking",
    "flicker": "tracking",
    "landmark_jitter": "tracking",
    "VideoSource": "io",
    "VideoSink": "io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

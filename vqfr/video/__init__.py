"""Restore the faces in videos: streaming PyAV decode/encode, face tracks with smoothed landmarks.

``VideoRestorer`` and ``VideoReport`` come from :mod:`vqfr.video.restorer`; :mod:`vqfr.video.tracking`
(tracks, smoothing and the stability figures) needs neither torch nor PyAV.
"""

from __future__ import annotations

from vqfr.utils.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})

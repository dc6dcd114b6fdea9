"""``vqfr serve``: a local web page to restore photos (the ``vqfr[web]`` extra, built with Gradio).

``vqfr.web.handlers`` holds the request handling and needs no Gradio; ``build_app`` and ``launch``
(from :mod:`vqfr.web.app`) import Gradio when first used.
"""

from __future__ import annotations

from vqfr.utils.lazy import lazy_exports

__all__ = ["build_app", "launch"]
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "vqfr.web.app"))

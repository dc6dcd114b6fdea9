"""``vqfr serve``: a local web page to restore photos (the ``vqfr[web]`` extra, built with Gradio).

``vqfr.web.handlers`` holds the request handling and needs no Gradio; ``build_app`` and ``launch``
(from :mod:`vqfr.web.app`) import Gradio when first used.
"""

from __future__ import annotations

__all__ = ["build_app", "launch"]


def __getattr__(name: str):
    if name in __all__:
        from vqfr.web import app

        return getattr(app, name)
    raise AttributeError(f"module 'vqfr.web' has no attribute {name!r}")

"""The metric table: every metric ``vqfr evaluate`` knows, declared once.

The CLI (names, defaults, which need ``--gt``, the weight-file options), the evaluation (what can
run, how a pair is scored) and the reports (direction, digits, the default ranking) all read
:data:`METRICS`. This module imports no torch, OpenCV or numpy (``vqfr evaluate --help`` reads it):
each metric names its scorer by ``"module:function"``, imported only when the metric runs.

A new metric is one :class:`Metric` entry here and its scorer in :mod:`vqfr.metrics.scorers`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from vqfr.metrics import weights as W


@dataclass(frozen=True)
class Metric:
    """One metric: its name, what it needs, how it is shown and ranked, and where its scorer lives."""

    name: str
    needs_gt: bool  # full-reference: compares each restored image with its ground truth
    lower_is_better: bool
    digits: int  # decimals in the console table, CSV and HTML
    unit: str  # what the number is, for the reports' note column
    # "module:function" (default: vqfr.metrics.scorers:<name>_scorer); ``function(options: EvalOptions)`` loads
    # what it needs once per process and returns ``score(images: PairImages) -> dict[str, float]``.
    scorer: str = ""
    weights: tuple[W.StandardFile, ...] = ()  # weight files it cannot run without (each is a CLI option)
    per_image: bool = True  # False: one number for the whole set (FID); its scorer only collects features
    crop_border: bool = False  # honours --crop-border (whose size is then checked before any metric runs)
    conventions: bool = False  # honours --test-y-channel and --correct-mean-var (the reports say how it was taken)
    uses_torch: bool = False  # runs a torch network: worker processes then use one thread each
    extra: tuple[tuple[str, int], ...] = ()  # further per-image values its scorer returns, with their digits
    rank: int | None = None  # preference as report.html's default ordering metric (lowest first)

    def __post_init__(self) -> None:
        if not self.scorer:
            object.__setattr__(self, "scorer", f"vqfr.metrics.scorers:{self.name}_scorer")

    @property
    def better(self) -> str:
        return "lower" if self.lower_is_better else "higher"

    def load_scorer(self) -> Callable:
        """The scorer factory named by :attr:`scorer` (imports its module)."""
        module, name = self.scorer.split(":")
        return getattr(importlib.import_module(module), name)


_GT, _NO_GT = True, False
_LOWER, _HIGHER = True, False

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        # name, ground truth, better, digits, unit; then what differs from the defaults
        Metric("psnr", _GT, _HIGHER, 4, "dB", crop_border=True, conventions=True, rank=0),
        Metric("ssim", _GT, _HIGHER, 5, "", crop_border=True, conventions=True, rank=3),
        Metric("lpips", _GT, _LOWER, 4, "LPIPS-VGG", weights=(W.LPIPS_LINEAR, W.LPIPS_VGG16), uses_torch=True, rank=1),
        Metric("niqe", _NO_GT, _LOWER, 4, "no-reference", crop_border=True, rank=2),
        Metric("fid", _NO_GT, _LOWER, 4, "set-level", weights=(W.FID_INCEPTION,), per_image=False, uses_torch=True),
        Metric("idd", _GT, _LOWER, 3, "ArcFace, degrees", weights=(W.ARCFACE_R18,), uses_torch=True, rank=4),
        Metric("idd_dlib", _GT, _LOWER, 3, "dlib substitute, degrees", extra=(("idd_dlib_l2", 4),), rank=5),
        Metric("lmd_dlib", _GT, _LOWER, 3, "dlib 68-point substitute, pixels", rank=6),
    )
}

# What runs without --gt when --metrics is not given.
NO_GT_DEFAULT = tuple(name for name, m in METRICS.items() if not m.needs_gt)


def digits(column: str) -> int:
    """Decimals shown for a metric or one of its extra values."""
    if column in METRICS:
        return METRICS[column].digits
    return next((d for m in METRICS.values() for x, d in m.extra if x == column), 4)


def weight_files() -> list[W.StandardFile]:
    """Every weight file some metric needs, once each, in table order."""
    files: list[W.StandardFile] = []
    for m in METRICS.values():
        files += [spec for spec in m.weights if spec not in files]
    return files


def weight_key(spec: W.StandardFile) -> str:
    """The name of a weight file's path in :class:`EvalOptions.weights`, the JSON settings and argparse
    (``--lpips-weights`` -> ``lpips_weights``)."""
    return spec.option.removeprefix("--").replace("-", "_")

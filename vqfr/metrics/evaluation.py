"""Evaluate a folder of restored faces: pair files by name, score pairs in worker processes.

``evaluate(...)`` returns an :class:`Evaluation` (per-image values, problems, per-metric means and
the set-level FID); :mod:`vqfr.metrics.report` writes it as a table, CSV, JSON and HTML. The
metrics, and the scorer of each, are declared in :mod:`vqfr.metrics.table`.
Images are read the way BasicSR's scripts read them (``cv2`` IMREAD_UNCHANGED, BGR, no EXIF
rotation), so PSNR/SSIM/NIQE equal BasicSR's numbers on the same files (on the same machine; NIQE's last
digits depend on the CPU's float32 BLAS rounding).
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vqfr.errors import VQFRError
from vqfr.io import IMAGE_EXTENSIONS
from vqfr.io.read import png_data_problem, quiet_opencv
from vqfr.metrics import weights as W
from vqfr.metrics.psnr_ssim import check_crop_border
from vqfr.metrics.scorers import PairImages, bgr3
from vqfr.metrics.table import METRICS, weight_files, weight_key


@dataclass
class EvalOptions:
    """What to compute and with which weights. Paths left as None are looked up in the weight cache."""

    metrics: tuple[str, ...] = tuple(METRICS)
    crop_border: int = 0
    test_y_channel: bool = False
    correct_mean_var: bool = False
    # Weight files by weight_key (``{"lpips_weights": PATH}``); unset ones are looked up in the cache.
    weights: dict[str, str | None] = field(default_factory=dict)
    fid_stats: str | None = None
    device: str = "cpu"
    fid_features: bool = False  # extract pool3 features even when FID itself has no reference

    def weight(self, spec: W.StandardFile) -> str | None:
        """The path given for a weight file, or None."""
        return self.weights.get(weight_key(spec))


@dataclass
class Pair:
    name: str
    restored: Path
    gt: Path | None = None
    lq: Path | None = None


@dataclass
class PairResult:
    pair: Pair
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # metrics that could not be computed for this pair
    fid_features: dict[str, np.ndarray] = field(default_factory=dict)  # 'restored' / 'gt' pool3 vectors


@dataclass
class Evaluation:
    results: list[PairResult]  # successfully scored pairs, sorted by name
    problems: list[tuple[str, str]]  # (name, one-line reason) for every skipped file or pair
    metrics: tuple[str, ...]
    unavailable: dict[str, str]  # metric -> "n/a (...)" reason
    fid: float | None = None
    fid_reference: str | None = None
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how the run went, when it matters (e.g. a worker fallback)

    def values(self, metric: str) -> list[float]:
        return [r.values[metric] for r in self.results if metric in r.values]

    def mean(self, metric: str) -> float | None:
        if not METRICS[metric].per_image:  # FID, the one set-level metric
            return self.fid
        vals = self.values(metric)
        return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------- files and pairing


def images_by_stem(folder: str | os.PathLike) -> dict[str, Path]:
    """Image files directly in ``folder`` keyed by file stem; a one-line error if it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VQFRError(f"not a folder: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in found:
                raise VQFRError(f"two images named {path.stem!r} in {folder}: {found[path.stem].name}, {path.name}")
            found[path.stem] = path
    return found


def pair_files(
    restored_dir: str | os.PathLike, gt_dir: str | os.PathLike | None = None, lq_dir: str | os.PathLike | None = None
) -> tuple[list[Pair], list[tuple[str, str]]]:
    """Match restored, ground-truth and low-quality images by file stem (extensions may differ).

    Returns (pairs, problems): with ``gt_dir``, a restored image without a ground truth and a
    ground truth without a restored image are problems, not pairs. LQ images are optional.
    """
    restored = images_by_stem(restored_dir)
    if not restored:
        raise VQFRError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {restored_dir}")
    gts = images_by_stem(gt_dir) if gt_dir is not None else None
    lqs = images_by_stem(lq_dir) if lq_dir is not None else {}
    pairs, problems = [], []
    for name, path in restored.items():
        if gts is not None and name not in gts:
            problems.append((name, f"missing pair: no ground truth named {name}.* in {gt_dir}"))
            continue
        pairs.append(Pair(name, path, gts[name] if gts is not None else None, lqs.get(name)))
    if gts is not None:
        for name in gts:
            if name not in restored:
                problems.append((name, f"missing pair: no restored image named {name}.* in {restored_dir}"))
    return pairs, problems


def read_bgr_uint8(path: str | os.PathLike) -> np.ndarray:
    """uint8 BGR (HxWx3) or gray (HxW) pixels as BasicSR reads them; alpha is dropped."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        raise VQFRError(f"cannot read {path}: {err.strerror or err}") from None
    size = header_size(data.tobytes())
    # Images OpenCV refuses by size (below) are not inflated first just to be checked.
    if size is None or size[0] * size[1] <= int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30)):
        problem = png_data_problem(data.tobytes())
        if problem:  # checked here: libpng would print its own "libpng error" line to stderr
            raise VQFRError(f"cannot read {path}: truncated or corrupt ({problem})")
    try:
        with quiet_opencv():
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as err:  # OpenCV refuses images above its size limits with an assertion
        if size is not None:
            raise VQFRError(
                f"cannot read {path}: too large to decode: {size[0]}x{size[1]} pixels "
                "(OpenCV's limit is set by CV_IO_MAX_IMAGE_PIXELS)"
            ) from None
        raise VQFRError(f"cannot read {path}: OpenCV cannot decode it ({(err.err or str(err)).strip()})") from None
    if img is None:
        raise VQFRError(f"cannot read {path}: not a decodable image")
    if img.dtype != np.uint8:
        raise VQFRError(f"cannot evaluate {path}: {img.dtype} pixels (only 8-bit images are supported)")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return img


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, without decoding pixels; None if unknown."""
    from PIL import Image

    # Pillow refuses (or warns about) huge images on open; here only the header is read, so its
    # decompression-bomb limit is lifted for this one call.
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Exception:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


# ---------------------------------------------------------------- weights


def fill_cached_weights(options: EvalOptions) -> EvalOptions:
    """Fill unset weight paths from the cache folder ($VQFR_HOME/metrics) when the standard file is there."""
    from vqfr.utils.known_files import cache_path

    weights = dict(options.weights)
    for spec in weight_files():
        if weights.get(weight_key(spec)) is None and cache_path(spec).is_file():
            weights[weight_key(spec)] = str(cache_path(spec))
    return dataclasses.replace(options, weights=weights)


def unavailable_metrics(options: EvalOptions, has_gt: bool) -> dict[str, str]:
    """Requested metrics that cannot be computed, each with the table text saying why."""
    out = {}
    for name in options.metrics:
        metric = METRICS[name]
        missing = [spec.option for spec in metric.weights if options.weight(spec) is None]
        if metric.needs_gt and not has_gt:
            out[name] = "n/a (needs --gt)"
        elif missing:
            out[name] = f"n/a (no weights: {', '.join(missing)})"
        elif name == "fid" and options.fid_stats is None and not has_gt:
            out[name] = "n/a (no reference: --fid-stats or --gt)"
    return out


# ---------------------------------------------------------------- scoring one pair


class PairScorer:
    """Computes the per-image metrics ``names`` of a pair. Loads their networks once; build one per process."""

    def __init__(self, options: EvalOptions, names: tuple[str, ...]):
        self.options = options
        self.scores = [METRICS[n].load_scorer()(options) for n in names]
        self.check_crop = bool(options.crop_border) and any(METRICS[n].crop_border for n in names)

    def __call__(self, pair: Pair) -> PairResult:
        result = PairResult(pair)
        try:
            self._score(pair, result)
        except VQFRError as err:
            result.error, result.values = str(err), {}
        except Exception as err:  # one broken pair must not stop the batch
            result.error, result.values = f"{type(err).__name__}: {err}".splitlines()[0], {}
        return result

    def _score(self, pair: Pair, result: PairResult) -> None:
        restored = read_bgr_uint8(pair.restored)
        gt = read_bgr_uint8(pair.gt) if pair.gt is not None else None
        if gt is not None and restored.shape[:2] != gt.shape[:2]:
            raise VQFRError(
                f"size mismatch: {pair.restored.name} is {restored.shape[1]}x{restored.shape[0]}, "
                f"ground truth {pair.gt.name} is {gt.shape[1]}x{gt.shape[0]}"
            )
        if gt is not None and restored.ndim != gt.ndim:
            restored, gt = bgr3(restored), bgr3(gt)
        if self.check_crop:
            try:
                check_crop_border(restored.shape[:2], self.options.crop_border)
            except ValueError as err:
                raise VQFRError(str(err)) from None
        images = PairImages(restored, gt, (pair.restored, pair.gt), self.options)
        result.warnings, result.fid_features = images.warnings, images.fid_features
        for score in self.scores:
            try:
                result.values.update(score(images))
            except ValueError as err:  # e.g. smaller than SSIM's window: this pair is skipped, with the reason
                raise VQFRError(str(err)) from None


# Per-process scorer for the worker pool (networks and dlib objects cannot be pickled).
_WORKER_SCORER: PairScorer | None = None


def _init_worker(options: EvalOptions, names: tuple[str, ...]) -> None:
    global _WORKER_SCORER
    if any(METRICS[n].uses_torch for n in names):
        import torch

        torch.set_num_threads(1)  # parallelism comes from the processes
    _WORKER_SCORER = PairScorer(options, names)


def _score_in_worker(pair: Pair) -> PairResult:
    return _WORKER_SCORER(pair)


# ---------------------------------------------------------------- the folder


def evaluate(
    restored_dir: str | os.PathLike,
    gt_dir: str | os.PathLike | None = None,
    lq_dir: str | os.PathLike | None = None,
    options: EvalOptions | None = None,
    workers: int = 1,
    progress: Callable[[int, int], object] | None = None,
) -> Evaluation:
    """Score every restored image (against its ground truth when ``gt_dir`` is given).

    ``workers`` > 1 scores pairs in that many processes. ``progress(done, total)`` is called as
    pairs finish.
    Bad pairs (missing, unreadable, size mismatch) become ``problems``; the rest are still scored.
    """
    options = fill_cached_weights(options or EvalOptions())
    unknown = [m for m in options.metrics if m not in METRICS]
    if unknown:
        raise VQFRError(f"unknown metric(s): {', '.join(unknown)} (choose from {', '.join(METRICS)})")
    if options.crop_border < 0:
        raise VQFRError(f"--crop-border must be >= 0, got {options.crop_border}")
    has_gt = gt_dir is not None
    pairs, problems = pair_files(restored_dir, gt_dir, lq_dir)
    unavailable = unavailable_metrics(options, has_gt)
    active = tuple(m for m in options.metrics if m not in unavailable)
    # FID's scorer collects the features; --save-fid-stats wants them even when FID itself is not computed.
    features = options.fid_features and options.weight(W.FID_INCEPTION) is not None
    names = tuple(n for n in METRICS if n in active or (n == "fid" and features))
    if "fid" in active and options.fid_stats is not None:
        from vqfr.metrics.fid import load_stats

        ref_stats = load_stats(options.fid_stats)  # fail early on a bad file
    scored: list[PairResult] = []
    notes: list[str] = []
    # Built here even for the worker pool: a bad weight file then fails as a one-line error, not
    # as a broken pool.
    scorer = PairScorer(options, names)
    if workers <= 1 or len(pairs) <= 1:
        for pair in pairs:
            scored.append(scorer(pair))
            if progress:
                progress(len(scored), len(pairs))
    else:
        done = _score_in_pool(pairs, workers, (options, names), scored, progress)
        if len(done) < len(pairs):  # the pool broke: score what is left here, slower but complete
            left = [p for i, p in enumerate(pairs) if i not in done]
            notes.append(
                f"worker processes failed; scored {len(left)} of {len(pairs)} image(s) in this process instead"
            )
            for pair in left:
                scored.append(scorer(pair))
                if progress:
                    progress(len(scored), len(pairs))

    results = sorted((r for r in scored if r.error is None), key=lambda r: r.pair.name)
    problems += [(r.pair.name, r.error) for r in scored if r.error is not None]
    problems.sort()

    evaluation = Evaluation(
        results, problems, options.metrics, unavailable, settings=_settings(options, workers), notes=notes
    )
    if "fid" in active:
        _finish_fid(evaluation, options, ref_stats if options.fid_stats is not None else None)
    return evaluation


def start_method(device: str) -> str:
    """The multiprocessing start method for the worker pool.

    "spawn" re-imports the caller's ``__main__``, which re-runs a script that calls
    :func:`evaluate` without an ``if __name__ == "__main__":`` guard and breaks the pool. "fork"
    does not, so it is used on Linux for CPU work; CUDA cannot be used after a fork, and macOS
    and Windows have no safe fork, so those get "spawn".
    """
    cuda_started = "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()
    if sys.platform.startswith("linux") and device == "cpu" and not cuda_started:
        return "fork"
    return "spawn"


def _score_in_pool(pairs: list[Pair], workers: int, initargs: tuple, scored: list, progress) -> set[int]:
    """Score ``pairs`` in worker processes, appending to ``scored``; the indices done (all, unless the pool broke)."""
    done: set[int] = set()
    ctx = multiprocessing.get_context(start_method(initargs[0].device))
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(pairs)), mp_context=ctx, initializer=_init_worker, initargs=initargs
        ) as pool:
            futures = {pool.submit(_score_in_worker, p): i for i, p in enumerate(pairs)}
            for future in as_completed(futures):
                scored.append(future.result())
                done.add(futures[future])
                if progress:
                    progress(len(scored), len(pairs))
    except BrokenProcessPool:
        pass
    return done


def _finish_fid(evaluation: Evaluation, options: EvalOptions, ref_stats) -> None:
    from vqfr.metrics.fid import fid_from_features

    restored = [r.fid_features["restored"] for r in evaluation.results if "restored" in r.fid_features]
    if len(restored) < 2:
        evaluation.unavailable["fid"] = "n/a (needs >= 2 images)"
        return
    reference = ref_stats
    if reference is None:
        gt = [r.fid_features["gt"] for r in evaluation.results if "gt" in r.fid_features]
        if len(gt) < 2:
            evaluation.unavailable["fid"] = "n/a (needs >= 2 ground-truth images)"
            return
        reference = np.stack(gt)
        evaluation.fid_reference = f"ground-truth set ({len(gt)} images)"
    else:
        evaluation.fid_reference = f"statistics file {options.fid_stats}"
    try:
        evaluation.fid = fid_from_features(np.stack(restored), reference)
    except VQFRError as err:
        evaluation.unavailable["fid"] = f"n/a ({err})"


def _settings(options: EvalOptions, workers: int) -> dict:
    """Everything that determines the numbers, for the JSON report (weight files by SHA-256)."""
    settings = {
        "metrics": list(options.metrics),
        "crop_border": options.crop_border,
        "test_y_channel": options.test_y_channel,
        "correct_mean_var": options.correct_mean_var,
        "device": options.device,
        "workers": workers,
        "color_order": "BGR (cv2.imread), as BasicSR",
    }
    files = [(weight_key(spec), options.weight(spec)) for spec in weight_files()] + [("fid_stats", options.fid_stats)]
    for key, path in files:
        if path is not None and Path(path).is_file():
            settings[key] = {"path": str(path), "sha256": W.sha256_of(path)}
    return settings

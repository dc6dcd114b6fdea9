"""Evaluate a folder of restored faces: pair files by name, score pairs in worker processes.

``evaluate(...)`` returns an :class:`Evaluation` (per-image values, problems, per-metric means and
the set-level FID); :mod:`vqfr.metrics.report` writes it as a table, CSV, JSON and HTML.
Images are read the way BasicSR's scripts read them (``cv2`` IMREAD_UNCHANGED, BGR, no EXIF
rotation), so PSNR/SSIM/NIQE equal BasicSR's numbers on the same files (on the same machine; NIQE's last
digits depend on the CPU's float32 BLAS rounding).
"""

from __future__ import annotations

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

# name -> (needs ground truth, lower is better, unit/description)
METRICS: dict[str, tuple[bool, bool, str]] = {
    "psnr": (True, False, "dB"),
    "ssim": (True, False, ""),
    "lpips": (True, True, "LPIPS-VGG"),
    "niqe": (False, True, "no-reference"),
    "fid": (False, True, "set-level"),
    "idd": (True, True, "ArcFace, degrees"),
    "idd_dlib": (True, True, "dlib substitute, degrees"),
    "lmd_dlib": (True, True, "dlib 68-point substitute, pixels"),
}
# Extra per-image values some metrics also produce (not selectable on their own).
EXTRA_VALUES = {"idd_dlib": ("idd_dlib_l2",)}


@dataclass
class EvalOptions:
    """What to compute and with which weights. Paths left as None are looked up in the weight cache."""

    metrics: tuple[str, ...] = tuple(METRICS)
    crop_border: int = 0
    test_y_channel: bool = False
    correct_mean_var: bool = False
    lpips_weights: str | None = None
    lpips_vgg_weights: str | None = None
    fid_weights: str | None = None
    fid_stats: str | None = None
    arcface_weights: str | None = None
    device: str = "cpu"
    fid_features: bool = False  # extract pool3 features even when FID itself has no reference


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
        if metric == "fid":
            return self.fid
        vals = self.values(metric)
        return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------- files and pairing


def list_images(folder: str | os.PathLike) -> dict[str, Path]:
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
    restored = list_images(restored_dir)
    if not restored:
        raise VQFRError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {restored_dir}")
    gts = list_images(gt_dir) if gt_dir is not None else None
    lqs = list_images(lq_dir) if lq_dir is not None else {}
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


def read_image(path: str | os.PathLike) -> np.ndarray:
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


def _bgr3(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


# ---------------------------------------------------------------- weights


def resolve_weights(options: EvalOptions) -> EvalOptions:
    """Fill unset weight paths from the cache folder when the standard file is there."""
    cache = W.default_cache_dir()
    resolved = dict(options.__dict__)
    for attr, spec in (
        ("lpips_weights", W.LPIPS_LINEAR),
        ("lpips_vgg_weights", W.LPIPS_VGG16),
        ("fid_weights", W.FID_INCEPTION),
        ("arcface_weights", W.ARCFACE_R18),
    ):
        if resolved[attr] is None and (cache / spec.filename).is_file():
            resolved[attr] = str(cache / spec.filename)
    return EvalOptions(**resolved)


def unavailable_metrics(options: EvalOptions, has_gt: bool) -> dict[str, str]:
    """Requested metrics that cannot be computed, each with the table text saying why."""
    out = {}
    for m in options.metrics:
        needs_gt = METRICS[m][0]
        if needs_gt and not has_gt:
            out[m] = "n/a (needs --gt)"
        elif m == "lpips":
            missing = [
                s.option
                for a, s in (("lpips_weights", W.LPIPS_LINEAR), ("lpips_vgg_weights", W.LPIPS_VGG16))
                if getattr(options, a) is None
            ]
            if missing:
                out[m] = f"n/a (no weights: {', '.join(missing)})"
        elif m == "idd" and options.arcface_weights is None:
            out[m] = f"n/a (no weights: {W.ARCFACE_R18.option})"
        elif m == "fid":
            if options.fid_weights is None:
                out[m] = f"n/a (no weights: {W.FID_INCEPTION.option})"
            elif options.fid_stats is None and not has_gt:
                out[m] = "n/a (no reference: --fid-stats or --gt)"
    return out


# ---------------------------------------------------------------- scoring one pair


class PairScorer:
    """Computes all per-image metrics of a pair. Loads its networks once; build one per process."""

    def __init__(self, options: EvalOptions, active: tuple[str, ...], fid_on_gt: bool, fid_extract: bool):
        self.options = options
        self.active = active
        self.fid_on_gt = fid_on_gt
        self.lpips = self.arcface = self.inception = self.dlib_identity = self.dlib_landmarks = None
        if "lpips" in active:
            from vqfr.metrics.lpips import load_lpips

            self.lpips = load_lpips(options.lpips_weights, options.lpips_vgg_weights).to(options.device)
        if "idd" in active:
            from vqfr.metrics.arcface import load_arcface

            self.arcface = load_arcface(options.arcface_weights).to(options.device)
        if fid_extract:
            from vqfr.metrics.inception import load_fid_inception

            self.inception = load_fid_inception(options.fid_weights).to(options.device)
        if "idd_dlib" in active:
            from vqfr.metrics.identity import DlibIdentity

            self.dlib_identity = DlibIdentity()
        if "lmd_dlib" in active:
            from vqfr.metrics.landmarks import DlibLandmarks

            self.dlib_landmarks = DlibLandmarks()

    def _tensor(self, bgr: np.ndarray):
        """RGB (1, 3, H, W) float tensor in [-1, 1] on the device."""
        import torch

        rgb = np.ascontiguousarray(_bgr3(bgr)[:, :, ::-1]).astype(np.float32) / 255.0
        return (torch.from_numpy(rgb.transpose(2, 0, 1))[None] * 2 - 1).to(self.options.device)

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
        from vqfr.metrics.niqe import calculate_niqe

        o, v = self.options, result.values
        restored = read_image(pair.restored)
        gt = read_image(pair.gt) if pair.gt is not None else None
        if gt is not None and restored.shape[:2] != gt.shape[:2]:
            raise VQFRError(
                f"size mismatch: {pair.restored.name} is {restored.shape[1]}x{restored.shape[0]}, "
                f"ground truth {pair.gt.name} is {gt.shape[1]}x{gt.shape[0]}"
            )
        if gt is not None and restored.ndim != gt.ndim:
            restored, gt = _bgr3(restored), _bgr3(gt)

        if o.crop_border and {"psnr", "ssim", "niqe"} & set(self.active):
            try:
                check_crop_border(restored.shape[:2], o.crop_border)
            except ValueError as err:
                raise VQFRError(str(err)) from None
        if gt is not None and {"psnr", "ssim"} & set(self.active):
            from vqfr.metrics.psnr_ssim import calculate_psnr, calculate_ssim, psnr_ssim_inputs

            ref, res = psnr_ssim_inputs(restored, gt, o.test_y_channel, o.correct_mean_var)
            try:
                if "psnr" in self.active:
                    v["psnr"] = calculate_psnr(ref, res, crop_border=o.crop_border)
                if "ssim" in self.active:  # its minimum size is checked only when it is asked for
                    v["ssim"] = calculate_ssim(ref, res, crop_border=o.crop_border)
            except ValueError as err:
                raise VQFRError(str(err)) from None
        if "niqe" in self.active:
            try:
                v["niqe"] = calculate_niqe(restored, o.crop_border, input_order="HW" if restored.ndim == 2 else "HWC")
            except ValueError as err:  # e.g. too small: the other metrics of this pair still count
                result.warnings.append(f"niqe not computed: {err}")
        if self.lpips is not None or self.inception is not None:
            import torch

            with torch.no_grad():
                if self.lpips is not None:
                    v["lpips"] = float(self.lpips(self._tensor(restored), self._tensor(gt))[0])
                if self.inception is not None:
                    result.fid_features["restored"] = self.inception(self._tensor(restored))[0].cpu().numpy()
                    if self.fid_on_gt and gt is not None:
                        result.fid_features["gt"] = self.inception(self._tensor(gt))[0].cpu().numpy()
        if self.arcface is not None:
            from vqfr.metrics.arcface import arcface_distance

            # The paper's script reads faces with cv2's own grayscale decoding.
            with quiet_opencv():
                gray_r = cv2.imread(str(pair.restored), cv2.IMREAD_GRAYSCALE)
                gray_g = cv2.imread(str(pair.gt), cv2.IMREAD_GRAYSCALE)
            if gray_r is None or gray_g is None:
                gray_r, gray_g = _gray(restored), _gray(gt)
            v["idd"] = arcface_distance(self.arcface, gray_r, gray_g)
        if self.dlib_identity is not None or self.dlib_landmarks is not None:
            rgb_r = np.ascontiguousarray(_bgr3(restored)[:, :, ::-1])
            rgb_g = np.ascontiguousarray(_bgr3(gt)[:, :, ::-1])
            if self.dlib_identity is not None:
                v["idd_dlib"], v["idd_dlib_l2"] = self.dlib_identity.distance(rgb_r, rgb_g)
            if self.dlib_landmarks is not None:
                v["lmd_dlib"] = self.dlib_landmarks.distance(rgb_r, rgb_g)


# Per-process scorer for the worker pool (networks and dlib objects cannot be pickled).
_WORKER_SCORER: PairScorer | None = None


def _init_worker(options: EvalOptions, active: tuple[str, ...], fid_on_gt: bool, fid_extract: bool) -> None:
    global _WORKER_SCORER
    if fid_extract or {"lpips", "idd", "niqe"} & set(active):  # the metrics that run torch
        import torch

        torch.set_num_threads(1)  # parallelism comes from the processes
    _WORKER_SCORER = PairScorer(options, active, fid_on_gt, fid_extract)


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
    options = resolve_weights(options or EvalOptions())
    unknown = [m for m in options.metrics if m not in METRICS]
    if unknown:
        raise VQFRError(f"unknown metric(s): {', '.join(unknown)} (choose from {', '.join(METRICS)})")
    if options.crop_border < 0:
        raise VQFRError(f"--crop-border must be >= 0, got {options.crop_border}")
    has_gt = gt_dir is not None
    pairs, problems = pair_files(restored_dir, gt_dir, lq_dir)
    unavailable = unavailable_metrics(options, has_gt)
    active = tuple(m for m in options.metrics if m not in unavailable)
    fid_on_gt = "fid" in active and options.fid_stats is None
    fid_extract = "fid" in active or (options.fid_features and options.fid_weights is not None)
    if "fid" in active and options.fid_stats is not None:
        from vqfr.metrics.fid import load_stats

        ref_stats = load_stats(options.fid_stats)  # fail early on a bad file
    scored: list[PairResult] = []
    notes: list[str] = []
    # Built here even for the worker pool: a bad weight file then fails as a one-line error, not
    # as a broken pool.
    scorer = PairScorer(options, active, fid_on_gt, fid_extract)
    if workers <= 1 or len(pairs) <= 1:
        for pair in pairs:
            scored.append(scorer(pair))
            if progress:
                progress(len(scored), len(pairs))
    else:
        done = _score_in_pool(pairs, workers, (options, active, fid_on_gt, fid_extract), scored, progress)
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
    for attr in ("lpips_weights", "lpips_vgg_weights", "fid_weights", "fid_stats", "arcface_weights"):
        path = getattr(options, attr)
        if path is not None and Path(path).is_file():
            settings[attr] = {"path": str(path), "sha256": W.sha256_of(path)}
    return settings

"""Face-restoration metrics with BasicSR-compatible numbers, and folder evaluation.

:mod:`vqfr.metrics.table` declares every metric once. The names below are loaded on first use, so
that reading the table (``vqfr evaluate --help``) imports neither numpy nor OpenCV; the learned
metrics live in their own modules (:mod:`vqfr.metrics.lpips`, :mod:`vqfr.metrics.inception`,
:mod:`vqfr.metrics.arcface`) and import torch.
"""

from __future__ import annotations

from vqfr.utils.lazy import lazy_exports

_EXPORTS = {
    "EvalOptions": "evaluation",
    "Evaluation": "evaluation",
    "evaluate": "evaluation",
    "pair_files": "evaluation",
    "frechet_distance": "fid",
    "imresize": "matlab_resize",
    "calculate_niqe": "niqe",
    "calculate_psnr": "psnr_ssim",
    "calculate_ssim": "psnr_ssim",
    "correct_mean_var": "psnr_ssim",
    "psnr_ssim_pair": "psnr_ssim",
    "to_y_channel": "psnr_ssim",
    "METRICS": "table",
    "Metric": "table",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})

"""Face-restoration metrics with BasicSR-compatible numbers, and folder evaluation.

Light imports only (numpy/OpenCV/SciPy); the learned metrics live in their own modules
(:mod:`vqfr.metrics.lpips`, :mod:`vqfr.metrics.inception`, :mod:`vqfr.metrics.arcface`) and import torch.
"""

from vqfr.metrics.evaluate import EvalOptions, Evaluation, evaluate, pair_files
from vqfr.metrics.fid import frechet_distance
from vqfr.metrics.matlab_resize import imresize
from vqfr.metrics.niqe import calculate_niqe
from vqfr.metrics.psnr_ssim import calculate_psnr, calculate_ssim, correct_mean_var, psnr_ssim_pair, to_y_channel

__all__ = [
    "EvalOptions",
    "Evaluation",
    "calculate_niqe",
    "calculate_psnr",
    "calculate_ssim",
    "correct_mean_var",
    "evaluate",
    "frechet_distance",
    "imresize",
    "pair_files",
    "psnr_ssim_pair",
    "to_y_channel",
]

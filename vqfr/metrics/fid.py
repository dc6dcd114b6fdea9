"""FID: Frechet distance between Gaussian fits of Inception pool3 features of two image sets.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
NeurIPS 2017. Features come from :class:`vqfr.metrics.inception.FIDInceptionV3` on RGB images in
[-1, 1] resized to 299x299 (bilinear), as in BasicSR / the VQFR paper's ``calculate_fid_folder.py``.
Reference statistics are a file (BasicSR's ``{'mean', 'cov'}`` .pth, or an .npz with ``mu``/``sigma``
or ``mean``/``cov``) or features of a reference folder (e.g. the ground truth).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vqfr.errors import VQFRError
from vqfr.metrics.weights import FID_FFHQ512_STATS, load_torch_file


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of an (N, D) feature matrix, in float64; needs N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise VQFRError(f"FID needs features of at least 2 images, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    w, v = np.linalg.eigh(matrix)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is computed as Tr((R S2 R)^(1/2)) with R = S1^(1/2): the same value as the trace
    of scipy's ``sqrtm(S1 @ S2)`` used by BasicSR, through symmetric eigendecompositions only, so it
    is real and well defined for the rank-deficient covariances of small image sets.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise VQFRError(f"FID statistics do not match: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    root = _psd_sqrt(sigma1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sigma2 @ root), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(features: np.ndarray, reference) -> float:
    """FID of an (N, D) feature set against ``reference``: (M, D) features or a (mean, cov) pair.

    With fewer images than feature dimensions the covariance is low-rank, and the trace term follows
    from the N x N (or N x M) products of centred features: identical to :func:`frechet_distance`
    on the same statistics, but seconds instead of minutes for 2048-d features.
    """
    feats = np.asarray(features, np.float64)
    mu1, sigma1 = feature_stats(feats)
    a1 = (feats - mu1) / np.sqrt(len(feats) - 1)  # S1 = a1.T @ a1
    if isinstance(reference, tuple):
        mu2, sigma2 = (np.asarray(x, np.float64) for x in reference)
        ref_feats = None
    else:
        ref_feats = np.asarray(reference, np.float64)
        mu2, sigma2 = feature_stats(ref_feats)
    dim = feats.shape[1]
    if mu2.shape != mu1.shape:
        raise VQFRError(f"FID statistics do not match: {mu1.shape} features vs {mu2.shape} reference")
    if len(feats) >= dim:
        return frechet_distance(mu1, sigma1, mu2, sigma2)
    if ref_feats is not None and len(ref_feats) < dim:
        a2 = (ref_feats - mu2) / np.sqrt(len(ref_feats) - 1)
        # eig(S1 S2) \ {0} = eig((a1 a2^T)(a1 a2^T)^T): the trace root is the nuclear norm of a1 a2^T.
        tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    else:
        # eig(S1 S2) \ {0} = eig(a1 S2 a1^T), a symmetric N x N matrix.
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(a1 @ sigma2 @ a1.T), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mean, cov) from a BasicSR-style .pth (``mean``/``cov``) or an .npz (``mu``/``sigma`` or ``mean``/``cov``)."""
    path = Path(path)
    if not path.is_file():
        raise VQFRError(f"--fid-stats: no such file: {path}")
    if path.suffix == ".npz":
        try:
            with np.load(path) as data:
                stats = {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise VQFRError(f"--fid-stats: cannot read {path}: {err}") from None
    else:
        stats = load_torch_file(path, FID_FFHQ512_STATS)
    if not isinstance(stats, dict):
        raise VQFRError(f"--fid-stats: {path} holds no statistics dict")
    for mean_key, cov_key in (("mean", "cov"), ("mu", "sigma")):
        if mean_key in stats and cov_key in stats:
            mean, cov = np.asarray(stats[mean_key], np.float64), np.asarray(stats[cov_key], np.float64)
            if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
                raise VQFRError(f"--fid-stats: {path}: mean {mean.shape} and covariance {cov.shape} do not fit")
            return mean, cov
    raise VQFRError(f"--fid-stats: {path} has no 'mean'/'cov' (or 'mu'/'sigma') entries")


def save_stats(path: str | os.PathLike, mean: np.ndarray, cov: np.ndarray) -> None:
    """Write statistics as an .npz with ``mu``/``sigma`` (pytorch-fid layout), atomically."""
    import io

    from vqfr.utils.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, mu=mean, sigma=cov)
    atomic_write_bytes(path, buffer.getvalue())

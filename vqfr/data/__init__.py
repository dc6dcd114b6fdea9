"""Training and test data: HQ face datasets (folder or LMDB), the degradation model, paired test sets."""

from .datasets import AugmentConfig, HQFaceDataset, ImageSource, InfiniteBatchSampler, PairedFaceDataset
from .degradations import DegradationConfig, degrade, gaussian_kernel, sample_rng
from .lmdb_store import LMDBReader, write_lmdb
from .testset import make_paired_testset

__all__ = [
    "AugmentConfig",
    "DegradationConfig",
    "HQFaceDataset",
    "ImageSource",
    "InfiniteBatchSampler",
    "LMDBReader",
    "PairedFaceDataset",
    "degrade",
    "gaussian_kernel",
    "make_paired_testset",
    "sample_rng",
    "write_lmdb",
]

"""Face restoration of real photos: the model zoo, :class:`FaceRestorer` and batch processing."""

from vqfr.restore.pipeline import DEFAULT_FIDELITY, FaceRestorer, RestoredFace, RestoreResult, select_device
from vqfr.restore.zoo import DEFAULT_MODEL, ZOO, ZooModel, resolve_weights, vqfr_home

__all__ = [
    "DEFAULT_FIDELITY",
    "DEFAULT_MODEL",
    "ZOO",
    "FaceRestorer",
    "RestoreResult",
    "RestoredFace",
    "ZooModel",
    "resolve_weights",
    "select_device",
    "vqfr_home",
]

"""Face restoration of real photos: the model zoo, :class:`FaceRuntime`, :class:`FaceRestorer` and batches."""

from vqfr.restore.pipeline import DEFAULT_FIDELITY, FaceRestorer, RestoredFace, RestoreResult
from vqfr.restore.runtime import FaceRuntime
from vqfr.restore.zoo import DEFAULT_MODEL, ZOO, ZooModel, resolve_weights, vqfr_home
from vqfr.utils.device import select_device

__all__ = [
    "DEFAULT_FIDELITY",
    "DEFAULT_MODEL",
    "ZOO",
    "FaceRestorer",
    "FaceRuntime",
    "RestoreResult",
    "RestoredFace",
    "ZooModel",
    "resolve_weights",
    "select_device",
    "vqfr_home",
]

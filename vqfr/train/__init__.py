"""Training both stages: the codebook (VQGAN) and the restoration network (VQFR).

``vqfr train -c CONFIG`` runs one process; ``torchrun --nproc_per_node N -m vqfr.train -c CONFIG``
runs data-parallel (DDP). See ``docs/train.md``.
"""

from .config import load_config, merge_config

__all__ = ["load_config", "merge_config", "run_training", "Trainer"]


def __getattr__(name: str):
    # Lazy: the trainer imports torch and the networks.
    if name in ("run_training", "Trainer"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'vqfr.train' has no attribute {name!r}")

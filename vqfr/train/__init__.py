"""Training both stages: the codebook (VQGAN) and the restoration network (VQFR).

``vqfr train -c CONFIG`` runs one process; ``torchrun --nproc_per_node N -m vqfr.train -c CONFIG``
runs data-parallel (DDP). See ``docs/train.md``.
"""

from vqfr.utils.lazy import lazy_exports

from .config import load_config, merge_config

__all__ = ["load_config", "merge_config", "run_training", "Trainer"]


# Lazy: the trainer imports torch and the networks.
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(("run_training", "Trainer"), "vqfr.train.trainer"))

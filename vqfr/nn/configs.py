"""Checking network configurations; the published and tiny ones come from the architecture registry.

``published_config(arch)`` gives the ``network_*`` block of the published option files, which
rebuilds the released checkpoints exactly (``tests/data/official_checkpoint_shapes.json``).
``tiny_config(arch)`` keeps the topology (six levels, f = 32) with few channels so tests and CPU
training runs take seconds. Both are read from :mod:`vqfr.nn.registry`, where each architecture
is described once.
"""

from __future__ import annotations

from typing import Any

from vqfr.errors import VQFRError
from vqfr.nn.registry import ARCHS, architecture

__all__ = ["ARCHS", "check_network_config", "published_config", "tiny_config"]


def published_config(arch: str) -> dict:
    """A fresh copy of the published configuration of ``arch``."""
    return architecture(arch).published_config()


# Integer keys allowed below 1: -1 switches a k-means schedule step off, 0 means none.
_ANY_INT = {"reestimate_maxiters", "warmup_iters"}
_NON_NEGATIVE = {
    "previous_offset_channel",
    "num_enc_blocks",
    "num_dec_blocks",
    "encoder_num_blocks",
    "decoder_num_blocks",
}
_NUMBERS = {"resolution_scale_rates"}  # lists of ints in the published files, but any positive number works


def check_network_config(arch: str, config: Any, where: str = "config") -> None:
    """Check the value types of a network configuration against the published one, before building.

    Mappings must be mappings, flags true/false, sizes positive integers, lists lists of those;
    keys the published configuration does not have are left to the constructor. Raises a one-line
    :class:`~vqfr.errors.VQFRError` naming the key path (``where`` is the prefix, e.g. ``network.config``).
    """
    _check_like(config, architecture(arch).published, where)


def _check_like(value: Any, template: Any, key: str) -> None:
    name = key.rsplit(".", 1)[-1].split("[", 1)[0]
    if isinstance(template, dict):
        if not isinstance(value, dict):
            raise VQFRError(f"{key} must be a mapping, got {value!r}")
        per_level = template and all(k.startswith("Level_") for k in template)
        for k, v in value.items():
            if per_level:  # one block per level: every level is checked against the published level's keys
                _check_like(v, next(iter(template.values())), f"{key}.{k}")
            elif k in template:
                _check_like(v, template[k], f"{key}.{k}")
    elif isinstance(template, list):
        if not isinstance(value, (list, tuple)) or not value:
            raise VQFRError(f"{key} must be a non-empty list, got {value!r}")
        for i, v in enumerate(value):
            _check_like(v, 1.0 if name in _NUMBERS else template[0], f"{key}[{i}]")
    elif isinstance(template, bool):
        if not isinstance(value, bool):
            raise VQFRError(f"{key} must be true or false, got {value!r}")
    elif isinstance(template, str):
        if not isinstance(value, str):
            raise VQFRError(f"{key} must be a name (text), got {value!r}")
    elif isinstance(template, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise VQFRError(f"{key} must be an integer, got {value!r}")
        if name in _NON_NEGATIVE and value < 0:
            raise VQFRError(f"{key} must be >= 0, got {value}")
        if name not in _ANY_INT | _NON_NEGATIVE and value < 1:
            raise VQFRError(f"{key} must be a positive integer, got {value}")
    elif isinstance(template, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise VQFRError(f"{key} must be a positive number, got {value!r}")


def tiny_config(arch: str, num_code: int = 64, code_dim: int = 32, spatial_size: int = 2) -> dict:
    """A small configuration of ``arch`` with the published topology (for tests and CPU runs).

    ``spatial_size`` is the code grid side, i.e. the input size divided by 32 (2 for 64 px).
    """
    return architecture(arch).tiny_config(num_code, code_dim, spatial_size)

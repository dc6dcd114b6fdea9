"""Published network configurations and tiny ones for tests.

``published_config(arch)`` gives the ``network_*`` block of the published option files, which
rebuilds the released checkpoints exactly (``tests/data/official_checkpoint_shapes.json``).
``tiny_config(arch)`` keeps the topology (six levels, f = 32) with few channels so tests and CPU
training runs take seconds.
"""

from __future__ import annotations

import copy
from typing import Any

from vqfr.errors import VQFRError

ARCHS = ("VQGANv1", "VQGANv2", "VQFRv1", "VQFRv2")

_PUBLISHED: dict[str, dict] = {
    "VQGANv1": {
        "base_channels": 128,
        "proj_patch_size": 32,
        "resolution_scale_rates": [1, 2, 2, 2, 2, 2],
        "channel_multipliers": [1, 1, 2, 2, 2, 4],
        "encoder_num_blocks": 2,
        "decoder_num_blocks": 3,
        "quant_level": ["Level_32"],
        "quantizer_opt": {
            "Level_32": {
                "type": "L2VectorQuantizerKmeans",
                "in_dim": 512,
                "num_code": 1024,
                "code_dim": 256,
                "reservoir_size": 16384,
                "reestimate_iters": 2000,
                "reestimate_maxiters": 30000,
                "warmup_iters": 10000,
            }
        },
    },
    "VQGANv2": {
        "base_channels": 64,
        "channel_multipliers": [1, 2, 2, 4, 4, 8],
        "num_enc_blocks": 2,
        "use_enc_attention": True,
        "num_dec_blocks": 2,
        "use_dec_attention": True,
        "code_dim": 256,
        "quantizer_opt": {
            "type": "L2VectorQuantizer",
            "num_code": 1024,
            "code_dim": 256,
            "spatial_size": [16, 16],
        },
    },
    "VQFRv1": {
        "base_channels": 128,
        "proj_patch_size": 32,
        "resolution_scale_rates": [1, 2, 2, 2, 2, 2],
        "channel_multipliers": [1, 1, 2, 2, 2, 4],
        "encoder_num_blocks": 2,
        "decoder_num_blocks": 3,
        "quant_level": ["Level_32"],
        "fix_keys": ["embedding"],
        "inpfeat_extraction_opt": {"in_dim": 3, "out_dim": 32},
        "align_from_patch": 32,
        "align_opt": {
            "Level_32": {
                "cond_channels": 32,
                "cond_downscale_rate": 32,
                "deformable_groups": 4,
                "channel": 512,
                "previous_offset_channel": 0,
            },
            "Level_16": {
                "cond_channels": 32,
                "cond_downscale_rate": 16,
                "deformable_groups": 4,
                "channel": 256,
                "previous_offset_channel": 512,
            },
            "Level_8": {
                "cond_channels": 32,
                "cond_downscale_rate": 8,
                "deformable_groups": 4,
                "channel": 256,
                "previous_offset_channel": 256,
            },
            "Level_4": {
                "cond_channels": 32,
                "cond_downscale_rate": 4,
                "deformable_groups": 4,
                "channel": 256,
                "previous_offset_channel": 256,
            },
            "Level_2": {
                "cond_channels": 32,
                "cond_downscale_rate": 2,
                "deformable_groups": 4,
                "channel": 128,
                "previous_offset_channel": 256,
            },
            "Level_1": {
                "cond_channels": 32,
                "cond_downscale_rate": 1,
                "deformable_groups": 4,
                "channel": 128,
                "previous_offset_channel": 128,
            },
        },
        "quantizer_opt": {
            "Level_32": {
                "type": "L2VectorQuantizerKmeans",
                "in_dim": 512,
                "num_code": 1024,
                "code_dim": 256,
                "reservoir_size": 16384,
                "reestimate_iters": 2000,
                "reestimate_maxiters": -1,
                "warmup_iters": -1,
            }
        },
    },
    "VQFRv2": {
        "base_channels": 64,
        "channel_multipliers": [1, 2, 2, 4, 4, 8],
        "num_enc_blocks": 2,
        "use_enc_attention": True,
        "num_dec_blocks": 2,
        "use_dec_attention": True,
        "code_dim": 256,
        "inpfeat_dim": 32,
        "align_opt": {"cond_channels": 32, "deformable_groups": 4},
        "code_selection_mode": "Predict",
        "quantizer_opt": {
            "type": "L2VectorQuantizer",
            "num_code": 1024,
            "code_dim": 256,
            "spatial_size": [16, 16],
        },
    },
}


def published_config(arch: str) -> dict:
    """A fresh copy of the published configuration of ``arch``."""
    if arch not in _PUBLISHED:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return copy.deepcopy(_PUBLISHED[arch])


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
    if arch not in _PUBLISHED:
        raise VQFRError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    _check_like(config, _PUBLISHED[arch], where)


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
    cfg = published_config(arch)
    if arch in ("VQGANv2", "VQFRv2"):
        cfg.update(
            base_channels=32,
            channel_multipliers=[1, 1, 1, 1, 2, 2],
            num_enc_blocks=1,
            num_dec_blocks=1,
            code_dim=code_dim,
        )
        cfg["quantizer_opt"].update(num_code=num_code, code_dim=code_dim, spatial_size=[spatial_size, spatial_size])
        if arch == "VQFRv2":
            cfg.update(inpfeat_dim=32, align_opt={"cond_channels": 32, "deformable_groups": 4})
        return cfg
    mults = [1, 1, 1, 1, 2, 2]
    cfg.update(base_channels=32, channel_multipliers=mults, encoder_num_blocks=1, decoder_num_blocks=1)
    for opt in cfg["quantizer_opt"].values():
        opt.update(
            in_dim=32 * mults[-1],
            num_code=num_code,
            code_dim=code_dim,
            reservoir_size=4 * num_code,
            reestimate_iters=10,
            reestimate_maxiters=-1 if arch == "VQFRv1" else 20,
            warmup_iters=-1 if arch == "VQFRv1" else 5,
        )
    if arch == "VQFRv1":
        for name, opt in cfg["align_opt"].items():
            s = int(name.split("_")[1]).bit_length() - 1
            opt.update(channel=32 * mults[s])
            opt.update(previous_offset_channel=0 if s == 5 else 32 * mults[s + 1])
    return cfg

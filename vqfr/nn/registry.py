"""One entry per network architecture: everything the package needs to know about it, in one place.

An :class:`Architecture` holds a network's class, its published and tiny configurations, the key
prefixes that identify its checkpoints, its stage-1 partner, whether it has a fidelity control and
which parts may run in reduced precision. Checkpoint loading (:mod:`vqfr.nn.checkpoint`), the model
zoo and the runtime (:mod:`vqfr.restore`) and the training configuration (:mod:`vqfr.train`) read
this table and never branch on a network's name, so a new version is its module in ``vqfr/nn/``
plus one :func:`register_architecture` call (here, or in your own code before loading).

Nothing here imports torch: a class is named as ``"module:Class"`` and imported when first built.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from vqfr.errors import VQFRError

STAGES = ("codebook", "restoration")

# (a copy of the published config, num_code, code_dim, spatial_size) -> a small config of the same topology
Shrink = Callable[[dict, int, int, int], dict]


@dataclass(frozen=True)
class Architecture:
    """What the package knows about one network architecture.

    Restoration networks share one call: ``net(x_lq, fidelity_ratio=r)`` returns a dict whose
    ``main_dec`` is the restored image; ``has_fidelity`` says whether ``r`` changes it (callers
    pass it either way and read this flag, e.g. to note that it was ignored).
    """

    name: str
    network: type | str  # the nn.Module class, or "module:Class" (imported on first use: this table stays torch-free)
    stage: str  # "codebook" (stage 1) or "restoration" (stage 2)
    published: Mapping[str, Any]  # the network_* block of the published option file (rebuilds released weights)
    shrink: Shrink  # the published config made tiny (few channels, same topology) for tests and CPU runs
    keys: tuple[str, ...]  # key prefixes every checkpoint of it has (the most specific match names a checkpoint)
    stage1: str | None = None  # restoration: the codebook network it is initialised from and trained against
    has_fidelity: bool = False  # restoration: whether forward's fidelity_ratio changes the output
    reduced_parts: tuple[str, ...] = ()  # restoration: submodules that may run in bf16/fp16; the rest stays fp32
    face_size: int = 512  # the input size when a checkpoint does not store one
    # Training: its task, "module:Class" under vqfr.train.tasks (a name only: nn never imports train;
    # None = not trainable by `vqfr train`), and the config keys only this network honours.
    task: str | None = None
    train_options: tuple[str, ...] = ()
    # The published config adjusted to what a checkpoint's keys show (e.g. a VQFRv2 without a code predictor).
    config_for_keys: Callable[[dict, Collection[str]], dict] | None = None
    description: str = field(default="", compare=False)

    def network_class(self) -> type:
        """The ``nn.Module`` class (imported now when given as ``"module:Class"``)."""
        if not isinstance(self.network, str):
            return self.network
        module, _, name = self.network.partition(":")
        return getattr(importlib.import_module(module), name)

    def published_config(self) -> dict:
        """A fresh copy of the published configuration."""
        return copy.deepcopy(dict(self.published))

    def tiny_config(self, num_code: int = 64, code_dim: int = 32, spatial_size: int = 2) -> dict:
        """A small configuration with the published topology; ``spatial_size`` is the input size / 32."""
        return self.shrink(self.published_config(), num_code, code_dim, spatial_size)

    def config_from_keys(self, keys: Collection[str]) -> dict:
        """The published configuration, adjusted to a checkpoint's keys where the entry says how."""
        config = self.published_config()
        return self.config_for_keys(config, keys) if self.config_for_keys else config

    @property
    def weights(self) -> tuple[str, ...]:
        """Names of the known weight files (model zoo, bundled) holding this architecture."""
        from vqfr.utils.known_files import FILES

        return tuple(name for name, f in FILES.items() if f.arch == self.name)


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Add ``arch`` to the table (a name can be registered once); returns it."""
    if arch.name in _REGISTRY:
        raise VQFRError(f"architecture {arch.name} is already registered")
    if arch.stage not in STAGES:
        raise VQFRError(f"architecture {arch.name}: stage must be one of {', '.join(STAGES)}, got {arch.stage!r}")
    if not arch.keys:
        raise VQFRError(f"architecture {arch.name}: give the key prefixes that identify its checkpoints")
    if arch.stage == "restoration":
        partner = _REGISTRY.get(arch.stage1 or "")
        if partner is None or partner.stage != "codebook":
            raise VQFRError(f"architecture {arch.name}: stage1 must name a registered codebook network")
    _REGISTRY[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    """The entry for ``name``; an unknown name is a one-line error listing the known ones."""
    found = _REGISTRY.get(name) if isinstance(name, str) else None
    if found is None:
        raise VQFRError(f"unknown architecture {name!r}; choose one of {', '.join(_REGISTRY)}")
    return found


def is_registered(name: object) -> bool:
    return isinstance(name, str) and name in _REGISTRY


def architectures(stage: str | None = None) -> tuple[Architecture, ...]:
    """Every registered architecture (of ``stage`` when given), in registration order."""
    return tuple(a for a in _REGISTRY.values() if stage is None or a.stage == stage)


def infer_arch(keys: Collection[str]) -> str | None:
    """The architecture a state dict belongs to, from its keys: the entry with the most key prefixes
    all present wins (a restoration network also holds its codebook network's parts); None if none
    matches or two equally specific ones do."""
    matches = [a for a in _REGISTRY.values() if all(any(k.startswith(p) for k in keys) for p in a.keys)]
    if not matches:
        return None
    most = max(len(a.keys) for a in matches)
    best = [a for a in matches if len(a.keys) == most]
    return best[0].name if len(best) == 1 else None


# ---------------------------------------------------------------- the tiny configurations
_TINY_MULTIPLIERS = [1, 1, 1, 1, 2, 2]


def shrink_v2(cfg: dict, num_code: int, code_dim: int, spatial_size: int) -> dict:
    """VQGANv2 / VQFRv2 with 32 base channels, one block a level and a ``num_code`` codebook."""
    cfg.update(
        base_channels=32,
        channel_multipliers=list(_TINY_MULTIPLIERS),
        num_enc_blocks=1,
        num_dec_blocks=1,
        code_dim=code_dim,
    )
    cfg["quantizer_opt"].update(num_code=num_code, code_dim=code_dim, spatial_size=[spatial_size, spatial_size])
    return cfg


def shrink_v1(cfg: dict, num_code: int, code_dim: int, spatial_size: int) -> dict:
    """VQGANv1 / VQFRv1 with 32 base channels, one block a level and short k-means schedules."""
    mults = list(_TINY_MULTIPLIERS)
    cfg.update(base_channels=32, channel_multipliers=mults, encoder_num_blocks=1, decoder_num_blocks=1)
    for opt in cfg["quantizer_opt"].values():
        opt.update(
            in_dim=32 * mults[-1],
            num_code=num_code,
            code_dim=code_dim,
            reservoir_size=4 * num_code,
            reestimate_iters=10,
            # schedule steps the published config switches off (-1) stay off
            reestimate_maxiters=20 if opt["reestimate_maxiters"] > 0 else -1,
            warmup_iters=5 if opt["warmup_iters"] > 0 else -1,
        )
    for name, opt in cfg.get("align_opt", {}).items():  # VQFRv1: each level's channels follow the multipliers
        s = int(name.split("_")[1]).bit_length() - 1
        opt.update(channel=32 * mults[s], previous_offset_channel=0 if s == 5 else 32 * mults[s + 1])
    return cfg


def _v2_code_selection(config: dict, keys: Collection[str]) -> dict:
    """A VQFRv2 checkpoint without a code predictor (``feat2index``) selects its codes by nearest neighbour."""
    if not any(k.startswith("feat2index.") for k in keys):
        config["code_selection_mode"] = "Nearest"
    return config


# ---------------------------------------------------------------- the four networks
def _level(channel: int, rate: int, previous: int) -> dict:
    return {
        "cond_channels": 32,
        "cond_downscale_rate": rate,
        "deformable_groups": 4,
        "channel": channel,
        "previous_offset_channel": previous,
    }


def _kmeans(maxiters: int, warmup: int) -> dict:
    return {
        "Level_32": {
            "type": "L2VectorQuantizerKmeans",
            "in_dim": 512,
            "num_code": 1024,
            "code_dim": 256,
            "reservoir_size": 16384,
            "reestimate_iters": 2000,
            "reestimate_maxiters": maxiters,
            "warmup_iters": warmup,
        }
    }


_V1_BODY = {
    "base_channels": 128,
    "proj_patch_size": 32,
    "resolution_scale_rates": [1, 2, 2, 2, 2, 2],
    "channel_multipliers": [1, 1, 2, 2, 2, 4],
    "encoder_num_blocks": 2,
    "decoder_num_blocks": 3,
    "quant_level": ["Level_32"],
}
_V2_BODY = {
    "base_channels": 64,
    "channel_multipliers": [1, 2, 2, 4, 4, 8],
    "num_enc_blocks": 2,
    "use_enc_attention": True,
    "num_dec_blocks": 2,
    "use_dec_attention": True,
    "code_dim": 256,
}
_V2_QUANTIZER = {"type": "L2VectorQuantizer", "num_code": 1024, "code_dim": 256, "spatial_size": [16, 16]}

register_architecture(
    Architecture(
        name="VQGANv1",
        network="vqfr.nn.vqgan_v1:VQGANv1",
        stage="codebook",
        published={**_V1_BODY, "quantizer_opt": _kmeans(30000, 10000)},
        shrink=shrink_v1,
        keys=("quantizer.quantize_dict.",),
        task="vqgan:VQGANTask",
        description="the paper's codebook network (k-means codebook)",
    )
)
register_architecture(
    Architecture(
        name="VQGANv2",
        network="vqfr.nn.vqgan_v2:VQGANv2",
        stage="codebook",
        published={**_V2_BODY, "quantizer_opt": _V2_QUANTIZER},
        shrink=shrink_v2,
        keys=("encoder.blocks.", "quantizer.embedding.weight"),
        task="vqgan:VQGANTask",
        train_options=("train.restart_dead_codes_every",),
        description="the v2 codebook network (L2 codebook, attention)",
    )
)
register_architecture(
    Architecture(
        name="VQFRv1",
        network="vqfr.nn.vqfr_v1:VQFRv1",
        stage="restoration",
        published={
            **_V1_BODY,
            "fix_keys": ["embedding"],
            "inpfeat_extraction_opt": {"in_dim": 3, "out_dim": 32},
            "align_from_patch": 32,
            "align_opt": {
                "Level_32": _level(512, 32, 0),
                "Level_16": _level(256, 16, 512),
                "Level_8": _level(256, 8, 256),
                "Level_4": _level(256, 4, 256),
                "Level_2": _level(128, 2, 256),
                "Level_1": _level(128, 1, 128),
            },
            "quantizer_opt": _kmeans(-1, -1),
        },
        shrink=shrink_v1,
        keys=("quantizer.quantize_dict.", "main_decoder."),
        stage1="VQGANv1",
        has_fidelity=False,
        reduced_parts=("decoder", "main_decoder", "inpfeat_extraction"),
        task="vqfr_v1:VQFRv1Task",
        description="the paper's restoration network (no fidelity control)",
    )
)
register_architecture(
    Architecture(
        name="VQFRv2",
        network="vqfr.nn.vqfr_v2:VQFRv2",
        stage="restoration",
        published={
            **_V2_BODY,
            "inpfeat_dim": 32,
            "align_opt": {"cond_channels": 32, "deformable_groups": 4},
            "code_selection_mode": "Predict",
            "quantizer_opt": _V2_QUANTIZER,
        },
        shrink=shrink_v2,
        keys=("encoder.blocks.", "quantizer.embedding.weight", "main_branch."),
        stage1="VQGANv2",
        has_fidelity=True,
        reduced_parts=("decoder", "main_branch", "inpfeat_extraction"),
        config_for_keys=_v2_code_selection,
        task="vqfr_v2:VQFRv2Task",
        train_options=("train.main_branch_start", "network.zero_init_main_branch"),
        description="the v2 restoration network (fidelity control)",
    )
)

ARCHS = tuple(_REGISTRY)  # the built-in four

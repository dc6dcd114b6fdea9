"""Training configuration: a YAML file merged over defaults and checked before anything runs.

See ``configs/*.yml`` for the published recipes and ``docs/train.md`` for every key.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from vqfr.errors import VQFRError

STAGES = ("codebook", "restoration")
OUTPUT_KEYS = ("dec", "main_dec", "texture_dec")

DEFAULTS: dict[str, Any] = {
    "name": None,
    "stage": None,
    "seed": 0,
    "network": {"arch": None, "config": None, "init_from_stage1": True},
    "stage1": None,  # restoration: {arch, config, weights}
    "data": {
        "train": {"root": None, "size": 512, "hflip": True, "degradation": None},
        "val": None,  # {gt, lq (optional), size, degradation, seed, max_images}
        "batch_size_per_gpu": 2,
        "num_workers": 4,
    },
    "train": {
        "total_steps": None,
        "optim_g": {"lr": 1e-4, "betas": [0.9, 0.96], "weight_decay": 0.0},
        "optim_g_main": None,  # restoration v2: second group (main branch + input-feature conv)
        "optim_d": {"lr": 1e-4, "betas": [0.9, 0.96], "weight_decay": 0.0},
        "scheduler": {"milestones": [], "gamma": 1.0},
        "ema_decay": 0.0,
        "amp": "auto",  # auto (bf16 on a GPU that supports it) | bf16 | off
        "fidelity_ratio": 1.0,
        "find_unused_parameters": False,
    },
    "losses": {
        "pixel": {"dec": 1.0},  # output -> L1 weight
        "perceptual": {"type": "auto", "weight": 1.0, "outputs": ["dec"]},
        "codebook_weight": 1.0,
        "quant_feature_weight": 0.0,  # restoration: MSE(LQ encoding, HQ quantized feature)
        "quant_index_weight": 0.0,  # restoration v2: cross-entropy on code indices
        "r1_weight": 10.0,
        "r1_every": 16,
    },
    "discriminators": [],
    "logging": {
        "print_every": 100,
        "image_every": 1000,
        "checkpoint_every": 5000,
        "keep_last": 3,
        "val_every": 5000,
        "tensorboard": True,
    },
}

DISCRIMINATOR_DEFAULTS: dict[str, Any] = {
    "name": None,
    "arch": "StyleGAN2Discriminator",
    "config": {},
    "loss": "softplus",
    "target": "dec",
    "g_weight": 1.0,
    "adaptive": None,  # list of loss terms (pixel, perceptual, style) balanced at the last layer
    "d_loss_scale": 1.0,
    "start_step": 0,
    "r1": False,
}


def _merge(base: dict, over: dict, where: str) -> dict:
    if not isinstance(over, dict):
        raise VQFRError(f"config {where.rstrip('.') or 'file'} must be a mapping")
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in base:
            raise VQFRError(f"unknown config key {where}{key}")
        if isinstance(base[key], dict) and isinstance(value, dict) and key not in _FREE_FORM:
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


# Blocks whose keys are not fixed by the schema (passed through to constructors).
_FREE_FORM = {"config", "pixel", "perceptual", "degradation", "optim_g_main", "val"}


def merge_config(user: dict) -> dict:
    """Defaults overlaid with ``user``; unknown keys are an error."""
    if not isinstance(user, dict):
        raise VQFRError("a training config must be a YAML mapping")
    cfg = _merge(DEFAULTS, user, "")
    discs = cfg["discriminators"] or []
    if not isinstance(discs, list) or not all(isinstance(d, dict) for d in discs):
        raise VQFRError("config 'discriminators' must be a list of mappings")
    cfg["discriminators"] = [
        _merge(DISCRIMINATOR_DEFAULTS, d, f"discriminators[{i}].") for i, d in enumerate(cfg["discriminators"] or [])
    ]
    validate(cfg)
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """Read a YAML config, apply ``key.sub=value`` overrides (values parsed as YAML) and validate."""
    path = Path(path)
    if not path.is_file():
        raise VQFRError(f"config file not found: {path}")
    try:
        user = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise VQFRError(f"{path} is not valid YAML{where}") from None
    if not isinstance(user, dict):
        raise VQFRError(f"{path} must hold a YAML mapping")
    for item in overrides or []:
        apply_override(user, item)
    return merge_config(user)


def apply_override(cfg: dict, item: str) -> None:
    """Set ``a.b.c=value`` in ``cfg`` (creating mappings on the way)."""
    if "=" not in item:
        raise VQFRError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = cfg
    parts = key.strip().split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):  # discriminators.0.start_step
            if not part.isdigit() or int(part) >= len(node):
                raise VQFRError(f"override {item!r}: no list item {part!r} (there are {len(node)})")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise VQFRError(f"override {item!r}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise VQFRError(msg)


def validate(cfg: dict) -> None:
    """Check the merged config; raise a one-line VQFRError on the first problem."""
    _need(cfg["stage"] in STAGES, f"config 'stage' must be one of {', '.join(STAGES)}, got {cfg['stage']!r}")
    net = cfg["network"]
    _need(bool(net["arch"]), "config network.arch is required")
    _need(isinstance(net["config"], dict), "config network.config must be the network's constructor mapping")
    codebook_archs, restore_archs = ("VQGANv1", "VQGANv2"), ("VQFRv1", "VQFRv2")
    if cfg["stage"] == "codebook":
        _need(net["arch"] in codebook_archs, f"stage codebook trains VQGANv1/VQGANv2, not {net['arch']}")
    else:
        _need(net["arch"] in restore_archs, f"stage restoration trains VQFRv1/VQFRv2, not {net['arch']}")
        s1 = cfg["stage1"]
        _need(isinstance(s1, dict) and s1.get("arch") in codebook_archs, "restoration needs stage1.arch (VQGANv1/v2)")
        _need(isinstance(s1.get("config"), dict), "restoration needs stage1.config")
        expected = "VQGANv2" if net["arch"] == "VQFRv2" else "VQGANv1"
        _need(s1["arch"] == expected, f"{net['arch']} is trained against a {expected} stage-1 network")
    train = cfg["train"]
    _need(isinstance(train["total_steps"], int) and train["total_steps"] > 0, "train.total_steps must be > 0")
    _need(train["amp"] in ("auto", "bf16", "off"), "train.amp must be auto, bf16 or off")
    _need(0.0 <= float(train["ema_decay"]) < 1.0, "train.ema_decay must be in [0, 1)")
    data = cfg["data"]
    _need(bool(data["train"]["root"]), "config data.train.root (folder or .lmdb of HQ faces) is required")
    size = data["train"]["size"]
    _need(isinstance(size, int) and size > 0 and size % 32 == 0, "data.train.size must be a multiple of 32")
    _need(int(data["batch_size_per_gpu"]) > 0, "data.batch_size_per_gpu must be > 0")
    if cfg["stage"] == "restoration":
        _need(data["train"]["degradation"] is not None, "restoration needs data.train.degradation")
    losses = cfg["losses"]
    _need(isinstance(losses["pixel"], dict), "losses.pixel must map output names to weights")
    for key in list(losses["pixel"]) + list((losses["perceptual"] or {}).get("outputs", [])):
        _need(key in OUTPUT_KEYS, f"unknown network output {key!r} in losses; use {', '.join(OUTPUT_KEYS)}")
    _need(int(losses["r1_every"]) > 0, "losses.r1_every must be > 0")
    names = set()
    for d in cfg["discriminators"]:
        _need(bool(d["name"]), "every discriminator needs a name")
        _need(d["name"] not in names, f"duplicate discriminator name {d['name']}")
        names.add(d["name"])
        _need(
            d["target"] in OUTPUT_KEYS, f"discriminator {d['name']}: 'target' must be one of {', '.join(OUTPUT_KEYS)}"
        )
        _need(d["loss"] in ("softplus", "hinge"), f"discriminator {d['name']}: loss must be softplus or hinge")
        for term in d["adaptive"] or []:
            _need(term in ("pixel", "perceptual", "style"), f"discriminator {d['name']}: bad adaptive term {term}")
    log = cfg["logging"]
    for key in ("print_every", "image_every", "checkpoint_every", "val_every", "keep_last"):
        _need(int(log[key]) > 0, f"logging.{key} must be > 0")


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)

"""Training configuration: a YAML file merged over defaults and checked before anything runs.

See ``configs/*.yml`` for the published recipes and ``docs/train.md`` for every key.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import yaml

from vqfr.errors import VQFRError
from vqfr.nn.registry import STAGES

from .tasks import trained_archs

OUTPUT_KEYS = ("dec", "main_dec", "texture_dec")

DEFAULTS: dict[str, Any] = {
    "name": None,
    "stage": None,
    "seed": 0,
    "network": {"arch": None, "config": None, "init_from_stage1": True, "zero_init_main_branch": False},
    "stage1": None,  # restoration: {arch, config, weights}
    "data": {
        "train": {
            "root": None,
            "size": 512,
            "hflip": True,
            "degradation": None,
            "include": None,  # file-name patterns to keep (relative to root)
            "exclude": None,  # file-name patterns to leave out, e.g. the validation people
            "augment": None,  # {scale, rotate, shift, color} of the HQ face
        },
        "val": None,  # {gt, lq (optional), size, degradation, seed, max_images, include, exclude}
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
        "amp": "auto",  # auto (bf16 on GPUs that support it and CPUs with native bf16) | bf16 | off
        "fidelity_ratio": 1.0,
        "main_branch_start": 0,  # VQFRv2: steps up to this one train the code predictor alone (fidelity 0)
        "restart_dead_codes_every": 0,  # VQGANv2 stage 1: move codes unused for this many steps (0 = off)
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
_FREE_FORM = {"config", "pixel", "perceptual", "degradation", "optim_g_main", "val", "augment"}


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
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise VQFRError(f"{path} is not a readable YAML text file (a training config is YAML)") from None
    try:
        user = yaml.safe_load(text) or {}
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


def _int(value: Any, key: str, minimum: int) -> None:
    """``value`` must be an integer >= ``minimum`` (YAML gives strings for typos like ``1e5x``)."""
    _need(isinstance(value, int) and not isinstance(value, bool), f"{key} must be an integer, got {value!r}")
    _need(value >= minimum, f"{key} must be {'> 0' if minimum == 1 else f'>= {minimum}'}, got {value}")


def _num(value: Any, key: str, lo: float | None = None, hi: float | None = None, hi_open: bool = False) -> float:
    """``value`` as a finite number in [lo, hi] (or [lo, hi) with ``hi_open``).

    Strings that read as numbers are converted: YAML 1.1 reads ``1e-4`` (no dot) as a string.
    """
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _need(ok, f"{key} must be a number, got {value!r}")
    if lo is not None:
        _need(value >= lo, f"{key} must be >= {lo:g}, got {value}")
    if hi is not None:
        _need(value < hi if hi_open else value <= hi, f"{key} must be {'<' if hi_open else '<='} {hi:g}, got {value}")
    return value


def _optimizer(opt: Any, key: str) -> None:
    """An Adam block: positive lr, two betas in [0, 1), non-negative weight_decay."""
    _need(isinstance(opt, dict), f"{key} must be a mapping with lr, betas and weight_decay")
    unknown = set(opt) - {"lr", "betas", "weight_decay"}
    _need(not unknown, f"unknown key(s) in {key}: {', '.join(sorted(map(str, unknown)))}")
    _need("lr" in opt, f"{key}.lr is required")
    opt["lr"] = _num(opt["lr"], f"{key}.lr")
    _need(opt["lr"] > 0, f"{key}.lr must be > 0, got {opt['lr']}")
    betas = opt.get("betas", [0.9, 0.999])
    _need(isinstance(betas, (list, tuple)) and len(betas) == 2, f"{key}.betas must be [beta1, beta2], got {betas!r}")
    opt["betas"] = [_num(b, f"{key}.betas", 0.0, 1.0, hi_open=True) for b in betas]
    opt["weight_decay"] = _num(opt.get("weight_decay", 0.0), f"{key}.weight_decay", 0.0)


# What every key must hold: one table for all blocks, checked before the ranges in validate().
# "*" is any item of a list or any value of a mapping; a key under an absent (null) block is skipped.
# Numbers with ranges are checked by validate() itself (it also converts YAML's "1e-4" strings).
SCHEMA: dict[str, tuple[str, ...]] = {
    "name": ("text", "null"),
    "network": ("mapping",),
    "network.arch": ("text",),
    "network.config": ("mapping",),
    "network.init_from_stage1": ("bool",),
    "stage1": ("mapping", "null"),
    "stage1.arch": ("text",),
    "stage1.config": ("mapping",),
    "stage1.weights": ("path", "null"),
    "data": ("mapping",),
    "data.train": ("mapping",),
    "data.train.root": ("path",),
    "data.train.size": ("integer",),
    "data.train.hflip": ("bool",),
    "data.train.degradation": ("mapping", "null"),
    "data.val": ("mapping", "null"),
    "data.val.gt": ("path",),
    "data.val.lq": ("path", "null"),
    "data.val.size": ("integer", "null"),
    "data.val.degradation": ("mapping", "null", "'train'"),
    "data.val.seed": ("integer",),
    "data.val.max_images": ("integer", "null"),
    "data.val.fidelity_ratio": ("number",),
    "data.val.save_images": ("bool",),
    "train": ("mapping",),
    "train.optim_g": ("mapping",),
    "train.optim_g_main": ("mapping", "null"),
    "train.optim_d": ("mapping",),
    "train.scheduler": ("mapping",),
    "train.scheduler.milestones": ("list", "null"),
    "train.amp": ("text",),
    "train.find_unused_parameters": ("bool",),
    "losses": ("mapping",),
    "losses.pixel": ("mapping",),
    "losses.pixel.*": ("number",),
    "losses.perceptual": ("mapping", "null"),
    "losses.perceptual.type": ("text",),
    "losses.perceptual.weight": ("number",),
    "losses.perceptual.style_weight": ("number",),
    "losses.perceptual.outputs": ("list",),
    "losses.perceptual.vgg_weights": ("path", "null"),
    "losses.perceptual.lin_weights": ("path", "null"),
    "losses.perceptual.mobilenet_weights": ("path", "null"),
    "discriminators": ("list", "null"),
    "discriminators.*": ("mapping",),
    "discriminators.*.name": ("text",),
    "discriminators.*.arch": ("text",),
    "discriminators.*.config": ("mapping",),
    "discriminators.*.loss": ("text",),
    "discriminators.*.target": ("text",),
    "discriminators.*.adaptive": ("list", "null"),
    "discriminators.*.r1": ("bool",),
    "logging": ("mapping",),
    "logging.tensorboard": ("bool",),
}


def _is_number(v: Any) -> bool:
    if isinstance(v, str):  # YAML 1.1 reads 1e-4 as a string; float() is what the trainer applies
        try:
            v = float(v)
        except ValueError:
            return False
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_KINDS: dict[str, tuple[Any, str]] = {
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "text": (lambda v: isinstance(v, str) and v != "", "a string"),
    "path": (lambda v: isinstance(v, str) and v != "", "a path"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (_is_number, "a number"),
    "null": (lambda v: v is None, "null"),
    "'train'": (lambda v: v == "train", "'train'"),
}


def check_types(cfg: dict) -> None:
    """Check ``cfg`` against :data:`SCHEMA`; raise a one-line VQFRError naming the first wrong key."""
    for pattern, kinds in SCHEMA.items():
        for key, value in _lookup(cfg, pattern.split(".")):
            if not any(_KINDS[k][0](value) for k in kinds):
                wanted = " or ".join(_KINDS[k][1] for k in kinds)
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                raise VQFRError(f"config {key} must be {wanted}, got {shown}")


def _lookup(node: Any, parts: list[str], prefix: str = "") -> list[tuple[str, Any]]:
    """``(key path, value)`` of every present value matching ``parts``; parents of the wrong type are skipped
    (their own table entry reports them first)."""
    if not parts:
        return [(prefix, node)]
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(node, list):
            items = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
        elif isinstance(node, dict):
            items = [(f"{prefix}.{k}", v) for k, v in node.items()]
        else:
            return []
    elif isinstance(node, dict) and head in node:
        items = [(f"{prefix}.{head}" if prefix else head, node[head])]
    else:
        return []
    return [found for key, value in items for found in _lookup(value, rest, key)]


def validate(cfg: dict) -> None:
    """Check the merged config; raise a one-line VQFRError on the first problem.

    Numbers that YAML left as strings (``1e-4``) are converted in place.
    """
    train = cfg.get("train")
    if isinstance(train, dict) and train.get("amp") is False:
        train["amp"] = "off"  # YAML 1.1 reads a bare ``off`` (``amp: off``, ``-o train.amp=off``) as false
    check_types(cfg)
    _need(cfg["stage"] in STAGES, f"config 'stage' must be one of {', '.join(STAGES)}, got {cfg['stage']!r}")
    net = cfg["network"]
    _need(bool(net["arch"]), "config network.arch is required")
    _need(isinstance(net["config"], dict), "config network.config must be the network's constructor mapping")
    archs = trained_archs(cfg["stage"])
    _need(net["arch"] in archs, f"stage {cfg['stage']} trains {'/'.join(archs)}, not {net['arch']}")
    from vqfr.nn.registry import architecture, architectures

    spec = architecture(net["arch"])
    if cfg["stage"] == "restoration":
        s1 = cfg["stage1"]
        stage1_archs = trained_archs("codebook")
        _need(
            isinstance(s1, dict) and s1.get("arch") in stage1_archs,
            f"restoration needs stage1.arch ({'/'.join(stage1_archs)})",
        )
        _need(isinstance(s1.get("config"), dict), "restoration needs stage1.config")
        _need(s1["arch"] == spec.stage1, f"{net['arch']} is trained against a {spec.stage1} stage-1 network")
    from vqfr.nn.configs import check_network_config  # value types, before anything is built
    check_network_config(net["arch"], net["config"], "config network.config")
    if cfg["stage"] == "restoration":
        check_network_config(cfg["stage1"]["arch"], cfg["stage1"]["config"], "config stage1.config")
    _int(cfg["seed"], "seed", 0)
    train = cfg["train"]
    _int(train["total_steps"], "train.total_steps", 1)
    _need(train["amp"] in ("auto", "bf16", "off"), "train.amp must be auto, bf16 or off")
    train["ema_decay"] = _num(train["ema_decay"], "train.ema_decay", 0.0, 1.0, hi_open=True)
    train["fidelity_ratio"] = _num(train["fidelity_ratio"], "train.fidelity_ratio", 0.0, 1.0)
    _int(train["main_branch_start"], "train.main_branch_start", 0)
    _int(train["restart_dead_codes_every"], "train.restart_dead_codes_every", 0)
    _need(isinstance(net["zero_init_main_branch"], bool), "network.zero_init_main_branch must be true or false")
    for key in ("train.restart_dead_codes_every", "train.main_branch_start", "network.zero_init_main_branch"):
        block, name = key.split(".")
        if cfg[block][name] and key not in spec.train_options:  # an option of another network's task
            users = "/".join(a.name for a in architectures() if key in a.train_options)
            raise VQFRError(f"{key} is for {users}, not {net['arch']}")
    for key in ("optim_g", "optim_d"):
        _optimizer(train[key], f"train.{key}")
    if train["optim_g_main"] is not None:
        _optimizer(train["optim_g_main"], "train.optim_g_main")
    sch = train["scheduler"]
    milestones = sch["milestones"] or []
    _need(isinstance(milestones, list), "train.scheduler.milestones must be a list of steps")
    for m in milestones:
        _int(m, "train.scheduler.milestones", 1)
    sch["gamma"] = _num(sch["gamma"], "train.scheduler.gamma", 0.0)
    data = cfg["data"]
    _need(bool(data["train"]["root"]), "config data.train.root (folder or .lmdb of HQ faces) is required")
    size = data["train"]["size"]
    _need(isinstance(size, int) and size > 0 and size % 32 == 0, "data.train.size must be a multiple of 32")
    from vqfr.data.datasets import AugmentConfig, check_patterns

    for key in ("include", "exclude"):
        check_patterns(data["train"][key], f"data.train.{key}")
    AugmentConfig.from_dict(data["train"]["augment"])
    _int(data["batch_size_per_gpu"], "data.batch_size_per_gpu", 1)
    _int(data["num_workers"], "data.num_workers", 0)
    if cfg["stage"] == "restoration":
        _need(data["train"]["degradation"] is not None, "restoration needs data.train.degradation")
    losses = cfg["losses"]
    _need(isinstance(losses["pixel"], dict), "losses.pixel must map output names to weights")
    for key in list(losses["pixel"]) + list((losses["perceptual"] or {}).get("outputs", [])):
        _need(key in OUTPUT_KEYS, f"unknown network output {key!r} in losses; use {', '.join(OUTPUT_KEYS)}")
    for key in ("codebook_weight", "quant_feature_weight", "quant_index_weight", "r1_weight"):
        losses[key] = _num(losses[key], f"losses.{key}", 0.0)
    _int(losses["r1_every"], "losses.r1_every", 1)
    names = set()
    for d in cfg["discriminators"]:
        _need(bool(d["name"]), "every discriminator needs a name")
        _need(d["name"] not in names, f"duplicate discriminator name {d['name']}")
        names.add(d["name"])
        _need(
            d["target"] in OUTPUT_KEYS, f"discriminator {d['name']}: 'target' must be one of {', '.join(OUTPUT_KEYS)}"
        )
        _need(d["loss"] in ("softplus", "hinge"), f"discriminator {d['name']}: loss must be softplus or hinge")
        for key in ("g_weight", "d_loss_scale"):
            d[key] = _num(d[key], f"discriminator {d['name']}: {key}", 0.0)
        _int(d["start_step"], f"discriminator {d['name']}: start_step", 0)
        for term in d["adaptive"] or []:
            _need(term in ("pixel", "perceptual", "style"), f"discriminator {d['name']}: bad adaptive term {term}")
    log = cfg["logging"]
    for key in ("print_every", "image_every", "checkpoint_every", "val_every", "keep_last"):
        _int(log[key], f"logging.{key}", 1)


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)

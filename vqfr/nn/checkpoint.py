"""Loading and saving network weights in the released VQFR format.

A checkpoint is a ``torch.save``d dict with the state dict under ``params_ema`` and/or ``params``
(or a bare state dict). Ours add ``arch`` and ``config`` so a network can be rebuilt without the
user typing a configuration. Loading always uses ``weights_only=True``: a file from the internet
must never run code. Every failure is a :class:`~vqfr.errors.VQFRError` with a one-line message.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqfr.errors import VQFRError
from vqfr.nn.configs import check_network_config
from vqfr.nn.registry import architecture, infer_arch, is_registered
from vqfr.nn.safe_load import safe_load, safe_save
from vqfr.utils.device import select_device

STATE_KEYS = ("params_ema", "params")


def build_network(arch: str, config: dict) -> nn.Module:
    """Construct ``arch`` (a name in :mod:`vqfr.nn.registry`) from its configuration."""
    network = architecture(arch).network_class()
    check_network_config(arch, config, f"{arch} config")
    try:
        return network(**config)
    # Values of the right types can still be inconsistent (e.g. a level the channel list lacks).
    except (TypeError, KeyError, ValueError, IndexError, AttributeError, AssertionError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VQFRError(f"invalid configuration for {arch}: {first}") from None


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (weights only); one-line errors for missing, foreign or damaged files."""
    path = Path(path)
    if not path.exists():
        raise VQFRError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise VQFRError(f"checkpoint path is a folder, not a file: {path}")
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise VQFRError(f"{path} does not hold a dict of weights (found {type(obj).__name__})")
    return obj


def state_dict_of(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> dict[str, torch.Tensor]:
    """``params_ema``, else ``params``, else the dict itself; strips a DDP ``module.`` prefix."""
    for key in STATE_KEYS:
        if key in ckpt:
            sd = ckpt[key]
            break
    else:
        sd = ckpt
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)} if isinstance(sd, dict) else {}
    if not tensors:
        raise VQFRError(f"{path} holds no network weights (no tensors under params_ema, params or the top level)")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network weights stored in ``path`` (see :func:`state_dict_of`)."""
    return state_dict_of(read_checkpoint(path), path)


def check_fit(net: nn.Module, sd: dict[str, torch.Tensor], name: str = "network") -> str | None:
    """``None`` if ``sd`` fits ``net`` exactly, else a one-line description of the first mismatches."""
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if not (missing or unexpected or mismatched):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), first {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]}")
    if mismatched:
        k = mismatched[0]
        parts.append(
            f"{len(mismatched)} shape mismatch(es), first {k}: checkpoint {list(sd[k].shape)} vs {name} "
            f"{list(own[k].shape)}"
        )
    return f"weights do not fit {name}: " + "; ".join(parts)


def load_weights(net: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load the weights in ``path`` into ``net`` (strict by default) and return ``net``.

    Non-strict loading copies every tensor whose name and shape fit; a file of which nothing
    fits is an error, not a silent no-op.
    """
    sd = load_state_dict(path)
    problem = check_fit(net, sd, type(net).__name__)
    if problem and strict:
        raise VQFRError(f"{path}: {problem}")
    return _load_fitting(net, sd, path)


def _load_fitting(net: nn.Module, sd: dict[str, torch.Tensor], path: str | os.PathLike) -> nn.Module:
    """Load every tensor whose name and shape exist in ``net`` (the non-strict path); leave the rest."""
    own = net.state_dict()
    fitting = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise VQFRError(f"{path}: none of its {len(sd)} tensors fits {type(net).__name__} (nothing was loaded)")
    net.load_state_dict(fitting, strict=False)
    return net


def load_network(
    path: str | os.PathLike,
    arch: str | None = None,
    config: dict | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
) -> tuple[nn.Module, str, dict]:
    """Build the network a checkpoint holds and load it: returns ``(net.eval(), arch, config)``.

    The architecture and configuration come from the arguments, else from the checkpoint (ours
    store them), else from the keys (released files, published configurations). A checkpoint of
    another architecture than ``arch`` is refused by name.
    """
    target = select_device(str(device))  # an unavailable device fails before the file is read
    ckpt = read_checkpoint(path)
    sd = state_dict_of(ckpt, path)
    stored_arch = ckpt["arch"] if is_registered(ckpt.get("arch")) else None
    found = stored_arch or infer_arch(sd)
    if arch is not None and found is not None and found != arch:
        raise VQFRError(f"{path} holds {found} weights, not {arch}")
    arch = arch or found
    if arch is None:
        raise VQFRError(f"{path}: cannot tell which network these weights belong to (not a VQGAN/VQFR checkpoint)")
    checkpoint_face_size(ckpt, path)
    if config is None:
        stored = ckpt.get("config")
        config = stored if isinstance(stored, dict) else architecture(arch).config_from_keys(list(sd))
    with torch.device("meta"):  # no memory, no initialisation: the checkpoint supplies every weight
        skeleton = build_network(arch, config)
    problem = check_fit(skeleton, sd, arch)
    if problem is None:
        net = _assign_weights(skeleton, sd)
    elif strict:
        raise VQFRError(f"{path}: {problem}")
    else:
        net = _load_fitting(build_network(arch, config), sd, path)
    return net.to(target).eval(), arch, config


def checkpoint_face_size(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> int | None:
    """The ``face_size`` a checkpoint says its network runs at (ours store it), None if absent.

    A value that is not a positive multiple of 32 means a damaged or hand-edited file: one line.
    """
    value = ckpt.get("face_size")
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and value == int(value) and int(value) >= 32 and int(value) % 32 == 0):
        raise VQFRError(f"{path}: its face_size must be a positive multiple of 32, got {value!r}")
    return int(value)


def _assign_weights(net: nn.Module, sd: dict[str, torch.Tensor]) -> nn.Module:
    """Give a meta-device network fresh memory and copy the checkpoint in (no initialisation run).

    The network owns its tensors (nothing aliases the loaded dict), and non-persistent buffers
    start at zero as after construction.
    """
    net.to_empty(device="cpu")
    net.load_state_dict(sd, strict=True)
    persistent = set(net.state_dict())
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name not in persistent:  # counters and reservoirs start empty, as after construction
                buf.zero_()
    return net


def save_checkpoint(
    path: str | os.PathLike,
    net: nn.Module | dict[str, torch.Tensor],
    arch: str | None = None,
    config: dict | None = None,
    extra: dict[str, Any] | None = None,
    key: str = "params_ema",
) -> None:
    """Write ``{key: state_dict, 'arch', 'config', **extra}`` atomically (released format + metadata)."""
    sd = net.state_dict() if isinstance(net, nn.Module) else net
    obj: dict[str, Any] = {key: {k: v.detach().cpu() for k, v in sd.items()}}
    if arch is not None:
        obj["arch"] = arch
    if config is not None:
        obj["config"] = config
    obj.update(extra or {})
    safe_save(path, obj)

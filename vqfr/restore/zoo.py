"""Where restoration weights come from: the model files of :data:`vqfr.utils.known_files.FILES`, found offline first.

Lookup order for a model name: an explicit ``--weights`` file, then ``$VQFR_HOME`` (default
``~/.cache/vqfr``), then a download from the public release URL (progress bar, checksum checked
before the file is moved into place). Offline, the error names the exact path to put the file at.

``VQFR_lite`` ships inside the package, so ``auto`` (the default) always restores: it takes the
published ``VQFR_v2`` when that is on disk or can be downloaded, else ``VQFR_lite``, and says why.
"""

from __future__ import annotations

import os
import urllib.request  # noqa: F401 - zoo.urllib.request.urlopen is where tests cut the network
from dataclasses import dataclass
from pathlib import Path

from vqfr.errors import VQFRError
from vqfr.utils.download import sha256_file
from vqfr.utils.known_files import FILES, KnownFile, bundled_path, cache_path, fetch, offline, verify, vqfr_home

__all__ = [
    "AUTO",
    "DEFAULT_MODEL",
    "ZOO",
    "ResolvedWeights",
    "ZooModel",
    "bundled_path",
    "resolve_weights",
    "vqfr_home",
    "zoo_model",
]

ZooModel = KnownFile  # a released checkpoint: a known file whose ``arch`` names the network it holds

# `auto`: the authors' VQFR v2 when it is here or downloadable, else our bundled VQFR_lite.
AUTO = "auto"
DEFAULT_MODEL = AUTO
PREFERRED_MODEL = "VQFR_v2"
FALLBACK_MODEL = "VQFR_lite"

ZOO: dict[str, ZooModel] = {name: f for name, f in FILES.items() if f.arch is not None}

_ALIASES = {
    "v2": "VQFR_v2",
    "vqfrv2": "VQFR_v2",
    "v1": "VQFR_v1",
    "vqfrv1": "VQFR_v1",
    "vqfr_v1-33a1fac5": "VQFR_v1",
    "lite": "VQFR_lite",
}


def zoo_model(name: str) -> ZooModel | None:
    """The zoo entry for ``name`` (case-insensitive, ``v1``/``v2`` accepted), or None."""
    key = name.strip()
    for model in ZOO.values():
        if model.name.lower() == key.lower():
            return model
    alias = _ALIASES.get(key.lower())
    return ZOO[alias] if alias else None


def looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith((".pth", ".pt", ".ckpt")) or Path(name).is_file()


@dataclass
class ResolvedWeights:
    path: Path
    model: ZooModel | None  # None for a user's own checkpoint
    reason: str | None = None  # with model 'auto': which model was chosen and why (one line)


def resolve_weights(
    model: str = DEFAULT_MODEL,
    weights: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> ResolvedWeights:
    """Find (or fetch) the checkpoint for ``model`` (``auto``, a zoo name or a file path)."""
    if isinstance(model, str) and model.strip().lower() == AUTO and weights is None:
        return _resolve_auto(download, progress)
    entry = zoo_model(model) if isinstance(model, str) else None
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise VQFRError(f"weights file not found: {path}")
        if entry is not None:
            verify(path, entry)
        return ResolvedWeights(path, entry)
    if entry is None:
        path = Path(model).expanduser()
        if looks_like_path(str(model)):
            if not path.is_file():
                raise VQFRError(f"checkpoint not found: {path}")
            return ResolvedWeights(path, None)
        names = ", ".join([AUTO, *ZOO])
        raise VQFRError(f"unknown model {model!r}: use one of {names}, or the path of a checkpoint file")
    if entry.bundled:
        path = bundled_path(entry)
        if not path.is_file():
            raise VQFRError(
                f"model {entry.name} is not part of this vqfr installation ({path} is missing); "
                "reinstall vqfr, or use another --model"
            )
        return ResolvedWeights(path, entry)
    return ResolvedWeights(fetch(entry, download=download, progress=progress), entry)


def _resolve_auto(download: bool, progress: bool) -> ResolvedWeights:
    """``auto``: the published model if it is here or downloadable, else the bundled one, saying why."""
    preferred = ZOO[PREFERRED_MODEL]
    target = cache_path(preferred)
    try:
        found = resolve_weights(PREFERRED_MODEL, download=download, progress=progress)
    except VQFRError as err:
        if target.is_file():  # the file is there but damaged: say so rather than hide it behind the fallback
            raise
        if not bundled_path(ZOO[FALLBACK_MODEL]).is_file():  # a build without the bundled model: say what to fetch
            raise
        lite = resolve_weights(FALLBACK_MODEL)
        why = "downloads are switched off" if (not download or offline()) else _reason(err)
        lite.reason = (
            f"model auto -> {FALLBACK_MODEL} (bundled, 256 px): {PREFERRED_MODEL} is not on this machine and {why}; "
            f"for the published model save {preferred.url} as {target}"
        )
        return lite
    found.reason = f"model auto -> {PREFERRED_MODEL} ({found.path})"
    return found


def _reason(err: VQFRError) -> str:
    """The 'download failed: ...' part of a missing-model message."""
    text = str(err)
    start = text.find("download failed")
    return text[start:].split(": download ", 1)[0] if start >= 0 else "it could not be downloaded"


file_sha256 = sha256_file  # the public name this module has always had

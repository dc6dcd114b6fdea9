"""Where restoration weights come from: a small zoo of released checkpoints, found offline first.

Lookup order for a model name: an explicit ``--weights`` file, then ``$VQFR_HOME`` (default
``~/.cache/vqfr``), then a download from the public release URL (progress bar, checksum checked
before the file is moved into place). Offline, the error names the exact path to put the file at.

``VQFR_lite`` ships inside the package, so ``auto`` (the default) always restores: it takes the
published ``VQFR_v2`` when that is on disk or can be downloaded, else ``VQFR_lite``, and says why.
"""

from __future__ import annotations

import os
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from vqfr.errors import VQFRError
from vqfr.utils.download import download_url, sha256_file, sha256_matches


@dataclass(frozen=True)
class ZooModel:
    """A released checkpoint.

    ``sha256`` is the full sum where one has been verified; ``sha256_prefix`` is the first hex digits
    that BasicSR-style releases put in the file name (``NAME-<sha256[:8]>.pth``). Either is checked.
    """

    name: str
    arch: str
    filename: str
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    manual_url: str | None = None
    description: str = ""
    bundled: bool = False  # shipped in vqfr/weights/ (no lookup, no download)


# `auto`: the authors' VQFR v2 when it is here or downloadable, else our bundled VQFR_lite.
AUTO = "auto"
DEFAULT_MODEL = AUTO
PREFERRED_MODEL = "VQFR_v2"
FALLBACK_MODEL = "VQFR_lite"

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            name="VQFR_v2",
            arch="VQFRv2",
            filename="VQFR_v2.pth",
            url="https://github.com/TencentARC/VQFR/releases/download/v2.0.0/VQFR_v2.pth",
            # No checksum is published for this file; set sha256 here once a download has been verified.
            sha256=None,
            description="authors' release (ECCV 2022), FFHQ 512, fidelity-controllable",
        ),
        ZooModel(
            name="VQFR_v1",
            arch="VQFRv1",
            filename="VQFR_v1-33a1fac5.pth",
            url="https://github.com/TencentARC/VQFR/releases/download/v1.0.0/VQFR_v1-33a1fac5.pth",
            sha256_prefix="33a1fac5",
            manual_url="https://drive.google.com/drive/folders/1lczKYEbARwe27FJlKoFdng7UnffGDjO2",
            description="authors' release (ECCV 2022), FFHQ 512, the paper's model",
        ),
        ZooModel(
            name="VQFR_lite",
            arch="VQFRv2",
            filename="VQFR_lite.pth",
            url="",
            bundled=True,
            description="vqfr's own small VQFRv2 (256 px), bundled; non-commercial research use (docs/models.md)",
        ),
    )
}

_ALIASES = {
    "v2": "VQFR_v2",
    "vqfrv2": "VQFR_v2",
    "v1": "VQFR_v1",
    "vqfrv1": "VQFR_v1",
    "vqfr_v1-33a1fac5": "VQFR_v1",
    "lite": "VQFR_lite",
}


def vqfr_home() -> Path:
    """``$VQFR_HOME``, default ``~/.cache/vqfr``: where released weights are kept."""
    return Path(os.environ.get("VQFR_HOME") or Path.home() / ".cache" / "vqfr").expanduser()


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


def bundled_path(entry: ZooModel) -> Path:
    """Where a bundled model's file sits inside the installed package."""
    return Path(__file__).resolve().parents[1] / "weights" / entry.filename


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
            raise VQFRError(f"the bundled model file {path} is missing: reinstall vqfr (pip install --force-reinstall)")
        return ResolvedWeights(path, entry)
    target = vqfr_home() / entry.filename
    if target.is_file():
        verify_checksum(target, entry)
        return ResolvedWeights(target, entry)
    if not download or os.environ.get("VQFR_OFFLINE"):
        raise VQFRError(_missing_message(entry, target, "downloads are switched off"))
    try:
        download_file(entry.url, target, entry, progress=progress)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or err
        raise VQFRError(_missing_message(entry, target, f"download failed: {reason}")) from None
    return ResolvedWeights(target, entry)


def _resolve_auto(download: bool, progress: bool) -> ResolvedWeights:
    """``auto``: the published model if it is here or downloadable, else the bundled one, saying why."""
    preferred = ZOO[PREFERRED_MODEL]
    target = vqfr_home() / preferred.filename
    try:
        found = resolve_weights(PREFERRED_MODEL, download=download, progress=progress)
    except VQFRError as err:
        if target.is_file():  # the file is there but damaged: say so rather than hide it behind the fallback
            raise
        lite = resolve_weights(FALLBACK_MODEL)
        why = "downloads are switched off" if (not download or os.environ.get("VQFR_OFFLINE")) else _reason(err)
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


def _missing_message(entry: ZooModel, target: Path, why: str) -> str:
    source = entry.url + (f" (or {entry.manual_url})" if entry.manual_url else "")
    return (
        f"model {entry.name} is not on this machine and {why}: download {source} and save it as "
        f"{target}, or pass --weights PATH"
    )


file_sha256 = sha256_file  # the public name this module has always had


def verify_checksum(path: Path, entry: ZooModel, digest: str | None = None) -> str | None:
    """Check ``path`` against the entry's published sum; returns the sum computed (None if nothing to check)."""
    if entry.sha256 is None and entry.sha256_prefix is None:
        return None
    digest = digest or file_sha256(path)
    expected = entry.sha256 or entry.sha256_prefix
    if not sha256_matches(digest, expected):
        raise VQFRError(
            f"{path} has SHA-256 {digest[:16]}..., expected {expected[:16]}...: the file is damaged or not "
            f"{entry.filename}; delete it and download it again"
        )
    return digest


def download_file(url: str, target: Path, entry: ZooModel | None = None, progress: bool = True) -> Path:
    """Stream ``url`` into ``target``: temp file beside it, checksum verified, then renamed into place."""
    check = None if entry is None else (lambda tmp, digest: verify_checksum(tmp, entry, digest))
    digest = download_url(url, target, check=check, progress=progress)
    if entry is not None and entry.sha256 is None:
        print(f"vqfr: saved {target} (sha256 {digest})", file=sys.stderr)
    return target

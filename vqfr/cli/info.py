"""``vqfr info``: versions, devices, and which released weights are on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vqfr.utils.known_files import KnownFile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show versions, devices and where weights are looked up",
        description="Print the vqfr and torch versions, the devices torch can use, the weights folder "
        "($VQFR_HOME, default ~/.cache/vqfr) and which released models and metric weights are already in it.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vqfr import __version__
    from vqfr.restore.zoo import ZOO
    from vqfr.utils.known_files import FILES, vqfr_home

    print(f"vqfr {__version__}, torch {torch.__version__}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    print(f"devices: cpu, cuda {'yes' if torch.cuda.is_available() else 'no'}, mps {'yes' if has_mps else 'no'}")
    home = vqfr_home()
    print(f"weights folder ($VQFR_HOME): {home}")
    print("models (--model auto, the default: VQFR_v2 when it is here or downloadable, else VQFR_lite if bundled):")
    for name, entry in ZOO.items():
        print(f"  {name}: {entry.filename} {file_state(entry)}")
    print("metric weights (vqfr evaluate; --download-weights fetches those with a URL):")
    for entry in FILES.values():
        if entry.arch is None:
            print(f"  {entry.option}: {entry.filename} {file_state(entry)}")
    return 0


def file_state(entry: KnownFile) -> str:
    """Whether a known file is bundled, in $VQFR_HOME and usable, or missing (and where from)."""
    from vqfr.utils.known_files import bundled_path, cache_path

    if entry.bundled:
        return "bundled with vqfr" if bundled_path(entry).is_file() else "not bundled with this vqfr (docs/models.md)"
    path = cache_path(entry)
    if path.exists():
        return weights_state(path, entry)
    return f"missing (download {entry.url})" if entry.url else f"missing (no public URL: pass {entry.option} PATH)"


def weights_state(path: Path, entry: KnownFile) -> str:
    """Whether a weights file is usable: its published SHA-256 where there is one, else at least a
    complete, undamaged checkpoint archive (a truncated download must not read as present)."""
    from vqfr.utils.download import sha256_file
    from vqfr.utils.known_files import checksum_problem

    if not path.is_file():
        return "present but not a file; delete it and download it again"
    try:
        if entry.sha256:
            problem = checksum_problem(entry, sha256_file(path))
            if problem is None:
                return "present, checksum verified"
            return f"present but corrupt or truncated: {problem}; delete it and download it again"
        return _archive_state(path)
    except OSError as err:
        return f"present but unreadable ({err.strerror or err})"


def _archive_state(path: Path) -> str:
    """A checkpoint file judged by its structure alone (for files without a published sum)."""
    import zipfile

    problem = None
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        problem = "empty"
    if magic == b"PK\x03\x04":  # torch's zip format: a truncated file lacks the end record, a damaged one fails CRCs
        try:
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    problem = "not a PyTorch checkpoint (a zip file without data.pkl)"
                elif bad := archive.testzip():
                    problem = f"corrupt (checksum error in {bad})"
        except (zipfile.BadZipFile, EOFError, ValueError):
            problem = "truncated or corrupt (incomplete zip archive)"
        if problem is None:
            return "present (complete and undamaged; no published checksum to compare)"
    elif magic[:1] == b"\x80":  # a legacy (pre-zip) torch pickle: nothing to check without loading it
        return "present (legacy format, not checked; no published checksum)"
    else:
        problem = problem or "not a PyTorch checkpoint"
    return f"present but {problem}; delete it and download it again"

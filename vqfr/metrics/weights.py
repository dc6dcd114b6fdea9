"""The standard weight files the learned metrics use, and safe loading / checking of them.

No registry ships these files, so they are never bundled: users pass paths (or, with internet,
let :func:`vqfr.utils.known_files.fetch` download the ones with a public URL into
``$VQFR_HOME/metrics``). They are entries of the one table of known files,
:data:`vqfr.utils.known_files.FILES`, checked by its one rule: PyTorch-hub style names end in the
first 8 hex digits of the file's SHA-256; where no such digits are published nothing is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from vqfr.errors import VQFRError
from vqfr.utils.known_files import FILES, KnownFile, sha256_of, verify

StandardFile = KnownFile  # the metric files are known files with a folder (metrics/) and an option

LPIPS_VGG16 = FILES["lpips_vgg16"]
LPIPS_LINEAR = FILES["lpips_linear"]
FID_INCEPTION = FILES["fid_inception"]
FID_FFHQ512_STATS = FILES["fid_stats_ffhq512"]
ARCFACE_R18 = FILES["arcface"]


def check_file(path: str | os.PathLike, spec: StandardFile) -> str:
    """Check ``path`` exists and, if it has the standard name, that its SHA-256 is the published one.

    Returns the file's SHA-256 (recorded in reports so results stay traceable).
    """
    path = Path(path)
    if not path.is_file():
        raise VQFRError(f"{spec.option}: no such file: {path}")
    digest = sha256_of(path)
    try:
        verify(path, spec, digest)
    except VQFRError as err:
        raise VQFRError(f"{spec.option}: {err}") from None
    return digest


def load_torch_file(path: str | os.PathLike, spec: StandardFile) -> object:
    """``torch.load`` with ``weights_only=True``; numpy arrays (as in FID stats files) are allowed."""
    import numpy as np

    from vqfr.nn.safe_load import safe_load

    check_file(path, spec)
    allowed = [np.ndarray, np.dtype, type(np.dtype("float64")), type(np.dtype("float32"))]
    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    allowed += [(reconstruct, "numpy.core.multiarray._reconstruct"), reconstruct]
    try:
        return safe_load(path, allowed)
    except VQFRError as err:
        raise VQFRError(f"{spec.option}: {err}") from None


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Remove a DataParallel-style key prefix when every key has it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def fit_state_dict(net, state: dict, path: str | os.PathLike, spec: StandardFile) -> None:
    """Load ``state`` into ``net`` strictly, with a one-line error naming the file on any mismatch."""
    from vqfr.nn.checkpoint import check_fit

    state = strip_prefix(state)
    problem = check_fit(net, state, f"the {spec.description} network")
    if problem:
        raise VQFRError(f"{spec.option}: {path}: {problem}")
    net.load_state_dict(state, strict=True)


def load_state_dict_file(path: str | os.PathLike, spec: StandardFile) -> dict:
    """Read a state dict (bare, or under 'state_dict') from a torch file, checked and safely."""
    state = load_torch_file(path, spec)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise VQFRError(f"{spec.option}: {path} does not hold a state dict of tensors")
    return state

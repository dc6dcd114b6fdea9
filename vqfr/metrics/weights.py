"""The standard weight files the learned metrics use, and safe loading / checking of them.

No registry ships these files, so they are never bundled: users pass paths (or, with internet,
let :func:`download` fetch the ones with a public URL). The checksum column holds what can be
verified from the file's published name: PyTorch-hub style names end in the first 8 hex digits
of the file's SHA-256. Where no such digits are published we say so and check nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vqfr.errors import VQFRError
from vqfr.utils.download import download_url, sha256_file, sha256_matches


@dataclass(frozen=True)
class StandardFile:
    """One published weight/statistics file: what it is, where it comes from, how to check it."""

    key: str
    filename: str
    option: str
    description: str
    url: str | None
    sha256_prefix: str | None  # first hex digits of the SHA-256 (from the hub-style file name)


LPIPS_VGG16 = StandardFile(
    key="lpips_vgg16",
    filename="vgg16-397923af.pth",
    option="--lpips-vgg-weights",
    description="ImageNet VGG-16 (torchvision) backbone of LPIPS",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    sha256_prefix="397923af",
)
LPIPS_LINEAR = StandardFile(
    key="lpips_linear",
    filename="vgg.pth",
    option="--lpips-weights",
    description="LPIPS v0.1 linear calibration layers for VGG (lpips package, lpips/weights/v0.1/vgg.pth)",
    url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
    sha256_prefix=None,
)
FID_INCEPTION = StandardFile(
    key="fid_inception",
    filename="pt_inception-2015-12-05-6726825d.pth",
    option="--fid-weights",
    description="TensorFlow FID Inception-v3 ported to PyTorch (pytorch-fid)",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    sha256_prefix="6726825d",
)
FID_FFHQ512_STATS = StandardFile(
    key="fid_stats_ffhq512",
    filename="inception_FFHQ_512-f7b384ab.pth",
    option="--fid-stats",
    description="Inception pool3 mean/covariance of 50k FFHQ 512x512 faces (BasicSR model zoo)",
    url=None,
    sha256_prefix="f7b384ab",
)
ARCFACE_R18 = StandardFile(
    key="arcface",
    filename="resnet18_110.pth",
    option="--arcface-weights",
    description="ArcFace ResNet-18 (arcface-pytorch, gray 128x128 input) used by the VQFR/GFPGAN papers",
    url=None,
    sha256_prefix=None,
)



# (resolved path, size, mtime) -> SHA-256. An evaluation checks each weight file in the main process,
# in every worker and once more for the report; hundreds of MB each time is worth remembering
# (forked workers inherit what the main process already hashed).
_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, hashed once per process while the file stays unchanged."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def check_file(path: str | os.PathLike, spec: StandardFile) -> str:
    """Check ``path`` exists and, if it has the standard name with a hash suffix, that its SHA-256 fits.

    Returns the file's SHA-256 (recorded in reports so results stay traceable).
    """
    path = Path(path)
    if not path.is_file():
        raise VQFRError(f"{spec.option}: no such file: {path}")
    digest = sha256_of(path)
    if path.name == spec.filename:
        _check_published_sum(path, digest, spec)
    return digest


def _check_published_sum(path: Path, digest: str, spec: StandardFile) -> None:
    if spec.sha256_prefix and not sha256_matches(digest, spec.sha256_prefix):
        raise VQFRError(
            f"{spec.option}: {path} is corrupt or not the published file "
            f"(SHA-256 starts {digest[:8]}, the published one starts {spec.sha256_prefix})"
        )


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
    state = strip_prefix(state)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise VQFRError(
            f"{spec.option}: {path} does not fit the {spec.description} network "
            f"({len(missing)} missing keys e.g. {missing[:1]}, {len(unexpected)} unexpected e.g. {unexpected[:1]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise VQFRError(
                f"{spec.option}: {path}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
            )
    net.load_state_dict(state, strict=True)


def load_state_dict_file(path: str | os.PathLike, spec: StandardFile) -> dict:
    """Read a state dict (bare, or under 'state_dict') from a torch file, checked and safely."""
    state = load_torch_file(path, spec)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise VQFRError(f"{spec.option}: {path} does not hold a state dict of tensors")
    return state


def default_cache_dir() -> Path:
    """Where :func:`download` stores files: ``$VQFR_METRIC_WEIGHTS`` or ``~/.cache/vqfr/metrics``."""
    env = os.environ.get("VQFR_METRIC_WEIGHTS")
    return Path(env) if env else Path.home() / ".cache" / "vqfr" / "metrics"


def download(spec: StandardFile, cache_dir: str | os.PathLike | None = None) -> Path:
    """Fetch a standard file with a public URL into the cache (atomically, checked); return its path."""
    if spec.url is None:
        raise VQFRError(f"{spec.filename} has no public download URL; pass it with {spec.option} PATH")
    target = Path(cache_dir or default_cache_dir()) / spec.filename
    if target.is_file():
        check_file(target, spec)
        return target

    def check(_tmp: Path, digest: str) -> None:  # runs before the rename: a bad download is never kept
        _check_published_sum(target, digest, spec)

    try:
        download_url(spec.url, target, check=check, timeout=60)
    except OSError as err:
        raise VQFRError(f"cannot download {spec.url}: {err}") from None
    return target

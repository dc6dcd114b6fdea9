"""Every weight file vqfr knows by name: where it comes from, where it is kept, how it is checked.

One table, :data:`FILES`, for the restoration models (the model zoo and the bundled ``VQFR_lite``)
and the metric weight files; one cache root, ``$VQFR_HOME`` (default ``~/.cache/vqfr``; metric
files in its ``metrics/`` folder); one checksum rule: a file under its published name must have the
published SHA-256, whole or the first hex digits a hub-style name (``NAME-<sha256[:8]>.pth``)
carries; a file under another name is the user's own and is not compared. Downloads go through
:func:`vqfr.utils.download.download_url` (temporary file beside the target, checked before the
rename), so a failed or corrupt download never leaves a file at the target path.
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
class KnownFile:
    """One published weight file: what it is, where it comes from, how it is checked and passed."""

    name: str
    arch: str | None  # model files: the network it holds (a name in vqfr.nn.registry); None for other files
    filename: str
    url: str | None  # None: no public download (the user passes the file)
    sha256: str | None = None  # the published SHA-256, whole or its first hex digits; None: nothing published
    manual_url: str | None = None  # another place to get it by hand
    description: str = ""
    bundled: bool = False  # shipped in vqfr/weights/ (no lookup, no download)
    folder: str = ""  # the folder of $VQFR_HOME it is kept in
    option: str = "--weights"  # the command-line option that passes it by path


_MODEL_CARD = "non-commercial research use (docs/models.md)"

FILES: dict[str, KnownFile] = {
    f.name: f
    for f in (
        # ---- restoration models (the zoo: --model NAME)
        KnownFile(
            name="VQFR_v2",
            arch="VQFRv2",
            filename="VQFR_v2.pth",
            url="https://github.com/TencentARC/VQFR/releases/download/v2.0.0/VQFR_v2.pth",
            # No checksum is published for this file; set sha256 here once a download has been verified.
            description="authors' release (ECCV 2022), FFHQ 512, fidelity-controllable",
        ),
        KnownFile(
            name="VQFR_v1",
            arch="VQFRv1",
            filename="VQFR_v1-33a1fac5.pth",
            url="https://github.com/TencentARC/VQFR/releases/download/v1.0.0/VQFR_v1-33a1fac5.pth",
            sha256="33a1fac5",
            manual_url="https://drive.google.com/drive/folders/1lczKYEbARwe27FJlKoFdng7UnffGDjO2",
            description="authors' release (ECCV 2022), FFHQ 512, the paper's model",
        ),
        KnownFile(
            name="VQFR_lite",
            arch="VQFRv2",
            filename="VQFR_lite.pth",
            url=None,
            bundled=True,
            description=f"vqfr's own small VQFRv2 (256 px), bundled; {_MODEL_CARD}",
        ),
        # ---- metric weights (vqfr evaluate)
        KnownFile(
            name="lpips_vgg16",
            arch=None,
            filename="vgg16-397923af.pth",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256="397923af",
            description="ImageNet VGG-16 (torchvision) backbone of LPIPS",
            folder="metrics",
            option="--lpips-vgg-weights",
        ),
        KnownFile(
            name="lpips_linear",
            arch=None,
            filename="vgg.pth",
            url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
            description="LPIPS v0.1 linear calibration layers for VGG (lpips package, lpips/weights/v0.1/vgg.pth)",
            folder="metrics",
            option="--lpips-weights",
        ),
        KnownFile(
            name="fid_inception",
            arch=None,
            filename="pt_inception-2015-12-05-6726825d.pth",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            sha256="6726825d",
            description="TensorFlow FID Inception-v3 ported to PyTorch (pytorch-fid)",
            folder="metrics",
            option="--fid-weights",
        ),
        KnownFile(
            name="fid_stats_ffhq512",
            arch=None,
            filename="inception_FFHQ_512-f7b384ab.pth",
            url=None,
            sha256="f7b384ab",
            description="Inception pool3 mean/covariance of 50k FFHQ 512x512 faces (BasicSR model zoo)",
            folder="metrics",
            option="--fid-stats",
        ),
        KnownFile(
            name="arcface",
            arch=None,
            filename="resnet18_110.pth",
            url=None,
            description="ArcFace ResNet-18 (arcface-pytorch, gray 128x128 input) used by the VQFR/GFPGAN papers",
            folder="metrics",
            option="--arcface-weights",
        ),
    )
}


def vqfr_home() -> Path:
    """``$VQFR_HOME``, default ``~/.cache/vqfr``: where downloaded weights are kept."""
    return Path(os.environ.get("VQFR_HOME") or Path.home() / ".cache" / "vqfr").expanduser()


def cache_path(f: KnownFile) -> Path:
    """Where ``f`` is kept once downloaded (or where to put it by hand)."""
    return vqfr_home() / f.folder / f.filename


def bundled_path(f: KnownFile) -> Path:
    """Where a bundled file sits inside the installed package."""
    return Path(__file__).resolve().parents[1] / "weights" / f.filename


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


def checksum_problem(f: KnownFile, digest: str) -> str | None:
    """None when ``digest`` is ``f``'s published SHA-256 (or none is published), else the mismatch in words."""
    if f.sha256 is None or sha256_matches(digest, f.sha256):
        return None
    n = min(len(f.sha256), 16)
    return f"SHA-256 {digest[:n]}... is not the published {f.sha256[:n]}..."


def verify(path: str | os.PathLike, f: KnownFile, digest: str | None = None) -> None:
    """The checksum rule: a file under ``f``'s published name must be the published file (one line if not).

    A file under another name is the user's own (e.g. weights they trained) and is not compared.
    """
    path = Path(path)
    if f.sha256 is None or path.name != f.filename:
        return
    problem = checksum_problem(f, digest or sha256_of(path))
    if problem:
        raise VQFRError(f"{path} is corrupt or not the published file: {problem}; delete it and download it again")


def missing_message(f: KnownFile, target: Path, why: str) -> str:
    """One line: ``f`` is not here, why it was not fetched, and exactly where to put it."""
    source = (f.url or "") + (f" (or {f.manual_url})" if f.manual_url else "")
    what = f"model {f.name}" if f.arch else f"weight file {f.filename}"
    get = f"download {source} and save it as {target}, or " if source else ""
    return f"{what} is not on this machine and {why}: {get}pass {f.option} PATH"


def offline() -> bool:
    """Whether ``$VQFR_OFFLINE`` switches downloads off."""
    return bool(os.environ.get("VQFR_OFFLINE"))


def fetch(f: KnownFile, download: bool = True, progress: bool = True) -> Path:
    """``f`` from the cache (checked), else downloaded into it (checked before it is moved into place).

    Offline (``download=False`` or ``$VQFR_OFFLINE``), without a public URL or when the download
    fails, the one-line error names the exact path to put the file at.
    """
    target = cache_path(f)
    if target.is_file():
        verify(target, f)
        return target
    if f.url is None:
        raise VQFRError(missing_message(f, target, "it has no public download URL"))
    if not download or offline():
        raise VQFRError(missing_message(f, target, "downloads are switched off"))

    def check(_tmp: Path, digest: str) -> None:  # runs before the rename: a bad download is never kept
        problem = checksum_problem(f, digest)
        if problem:
            raise VQFRError(f"the download of {f.url} is corrupt or not the published file ({problem}); not kept")

    try:
        digest = download_url(f.url, target, check=check, progress=progress)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or err
        raise VQFRError(missing_message(f, target, f"download failed: {reason}")) from None
    if f.sha256 is None:  # nothing to compare with: print the sum so it can be recorded
        print(f"vqfr: saved {target} (sha256 {digest})", file=sys.stderr)
    return target

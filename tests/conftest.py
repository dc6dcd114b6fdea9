"""Fixtures and constants shared by several test files (import the constants with ``from conftest import ...``)."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The shared test photos (never copied into the repository): ../shared/data next to the checkout.
SHARED_DATA = ROOT.parent / "shared" / "data"
REAL_LQ = SHARED_DATA / "real_lq"  # whole/ photos and aligned/ 512 px face crops
ALIGNED_FACES = REAL_LQ / "aligned"
needs_shared_data = pytest.mark.skipif(not REAL_LQ.is_dir(), reason=f"shared test photos not found at {REAL_LQ}")


@pytest.fixture
def lock_holder() -> Iterator[Callable[[Path], subprocess.Popen]]:
    """``lock_holder(folder)`` starts another process that holds vqfr's lock on ``folder`` until the test ends.

    ``how``: ``"run"`` (a whole run), ``"rank0"`` (rank 0 of a torchrun run: ``shared=True``) or
    ``"join"`` (another rank of that run, joining rank 0's lock).
    """
    procs: list[subprocess.Popen] = []

    def start(folder: Path, how: str = "run") -> subprocess.Popen:
        lock = {
            "run": f"output_folder_lock({str(folder)!r}, 'vqfr restore')",
            "rank0": f"output_folder_lock({str(folder)!r}, 'vqfr restore', shared=True)",
            "join": f"join_folder_lock({str(folder)!r})",
        }[how]
        code = textwrap.dedent(
            f"""
            import sys
            from vqfr.utils.lock import join_folder_lock, output_folder_lock
            with {lock}:
                print("locked", flush=True)
                sys.stdin.read()
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.communicate("")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width: int, height: int, raw: bytes, interlace: int = 0) -> bytes:
    """An 8-bit RGB PNG of ``width x height`` whose image data is ``raw`` (filtered scanlines), compressed."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _truncated_png(width: int, height: int, rows: int) -> bytes:
    """An RGB PNG whose header promises ``width x height`` pixels but whose (valid) image data holds ``rows`` rows."""
    return png_bytes(width, height, b"".join(b"\x00" + bytes([120]) * (3 * width) for _ in range(rows)))


@pytest.fixture
def truncated_png() -> Callable[[int, int, int], bytes]:
    """``truncated_png(width, height, rows)``: PNG bytes whose image data stops after ``rows`` rows;
    ``rows=0`` is a header-only PNG (how a decompression bomb is probed without its pixels)."""
    return _truncated_png


def write_tiny_lpips(folder: Path, seed: int = 0):
    """LPIPS with narrow VGG stages (same code as the published widths, tiny files) and random weights,
    saved as the two published files are laid out; returns (network, linear-layers file, VGG file)."""
    import torch

    from vqfr.nn.perceptual import LPIPS

    torch.manual_seed(seed)
    net = LPIPS((4, 6, 8, 8, 8))
    for p in net.linear.parameters():
        p.data.uniform_(0, 1)  # LPIPS weights are non-negative
    vgg = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # a torchvision VGG file also holds the classifier
    torch.save(vgg, folder / "vgg16.pth")
    torch.save(net.linear.state_dict(), folder / "lin.pth")
    return net, folder / "lin.pth", folder / "vgg16.pth"


def write_tiny_checkpoint(path: Path, arch: str = "VQFRv2", seed: int = 0, noise: float = 0.0) -> Path:
    """A tiny random ``arch`` checkpoint for 64 px faces (ours: arch, config and ``face_size`` stored).

    ``noise`` is added to every weight so that every branch (main branch, deformable offsets)
    really contributes, as in a trained network; 0 (the default) keeps the initialisation.
    """
    import torch

    from vqfr.nn.checkpoint import build_network, save_checkpoint
    from vqfr.nn.configs import tiny_config

    torch.manual_seed(seed)
    config = tiny_config(arch)
    net = build_network(arch, config)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    save_checkpoint(path, net, arch=arch, config=config, extra={"face_size": 64})
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Callable[[Path, str], Path]:
    """``tiny_checkpoint(path, arch)``: a tiny random checkpoint of ``arch`` (64 px) for end-to-end tests."""
    return write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_v2_checkpoint(tmp_path_factory) -> Path:
    """A tiny random VQFR v2 checkpoint (64 px faces): the restore loop runs in a fraction of a second per face."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_v2.pth", "VQFRv2")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny VQFRv2 and VQFRv1 checkpoints (64 px) with noisy weights, so every branch contributes."""
    folder = tmp_path_factory.mktemp("tiny_weights")
    return {a: write_tiny_checkpoint(folder / f"{a}.pth", a, noise=0.05) for a in ("VQFRv2", "VQFRv1")}

"""Fixtures shared by several test files."""

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


def _truncated_png(width: int, height: int, rows: int) -> bytes:
    """An RGB PNG whose header promises ``width x height`` pixels but whose (valid) image data holds ``rows`` rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + bytes([120]) * (3 * width) for _ in range(rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture
def truncated_png() -> Callable[[int, int, int], bytes]:
    """``truncated_png(width, height, rows)``: PNG bytes whose image data stops after ``rows`` rows."""
    return _truncated_png


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
    """``tiny_checkpoint(path, arch)``: a tiny random VQFRv1/VQFRv2 checkpoint for end-to-end tests."""
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

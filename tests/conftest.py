"""Fixtures shared by several test files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def lock_holder() -> Iterator[Callable[[Path], subprocess.Popen]]:
    """``lock_holder(folder)`` starts another process that holds vqfr's lock on ``folder`` until the test ends."""
    procs: list[subprocess.Popen] = []

    def start(folder: Path) -> subprocess.Popen:
        code = textwrap.dedent(
            f"""
            import sys
            from vqfr.utils.lock import output_folder_lock
            with output_folder_lock({str(folder)!r}, "vqfr restore"):
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
        proc.communicate("")


def write_tiny_checkpoint(path: Path, arch: str = "VQFRv2", seed: int = 0, noise: float = 0.05) -> Path:
    """A tiny random ``arch`` checkpoint for 64 px faces (ours: arch, config and ``face_size`` stored).

    ``noise`` is added to every weight so that every branch (main branch, deformable offsets)
    really contributes, as in a trained network; 0 keeps the initialisation.
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
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random VQFRv2 and VQFRv1 checkpoints (64 px), written once per test session."""
    folder = tmp_path_factory.mktemp("tiny_weights")
    return {arch: write_tiny_checkpoint(folder / f"{arch}.pth", arch) for arch in ("VQFRv2", "VQFRv1")}

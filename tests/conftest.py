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


@pytest.fixture(scope="session")
def tiny_v2_checkpoint(tmp_path_factory) -> Path:
    """A tiny random VQFR v2 checkpoint (64 px faces): the restore loop runs in a fraction of a second per face."""
    import torch

    from vqfr.nn.checkpoint import build_network, save_checkpoint
    from vqfr.nn.configs import tiny_config

    torch.manual_seed(0)
    config = tiny_config("VQFRv2")
    path = tmp_path_factory.mktemp("weights") / "tiny_v2.pth"
    save_checkpoint(path, build_network("VQFRv2", config), arch="VQFRv2", config=config, extra={"face_size": 64})
    return path

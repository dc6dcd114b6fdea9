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

"""The ``vqfr`` entry point: version, help, subcommands, and that --help stays torch-free."""

import os
import subprocess
import sys

import pytest

from vqfr import __version__
from vqfr.cli import build_parser, main

SUBCOMMANDS = ("info", "restore", "video", "train", "degrade", "evaluate")


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"vqfr {__version__}"
    assert main([]) == 0  # no subcommand: help, exit 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0 and f"usage: vqfr {name}" in capsys.readouterr().out


def test_help_does_not_import_torch():
    code = "import sys; from vqfr.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_console_script_and_module_entry_points():
    out = subprocess.run([sys.executable, "-m", "vqfr", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"vqfr {__version__}"
    assert build_parser().prog == "vqfr"


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["info"], 141)])
def test_closed_pipe_ends_quietly(args, code):
    """`vqfr ... | head` closes the pipe early: no traceback, the shell's 141 like other Unix tools
    (argparse itself ignores a failed write of --version and exits 0)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "vqfr", *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)
    assert proc.returncode == code and proc.stderr == ""

"""The ``vqfr`` command. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import os
import sys

from vqfr import __version__
from vqfr.errors import VQFRError, one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqfr",
        description="Blind face restoration with VQFR: restore faces in photos and videos, train, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"vqfr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommands():
        module.register(sub)
    return parser


def _subcommands() -> list:
    # Plain imports; each module only imports torch inside its run function so --help stays fast.
    from vqfr.cli import degrade, evaluate, export, info, restore, serve, train, video

    return [info, restore, video, serve, train, degrade, evaluate, export]


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe must surface here, not as a traceback at interpreter exit
    except BrokenPipeError:
        # The reader went away (`vqfr evaluate ... | head`): stop quietly like other Unix tools.
        # Whatever the command finished is already on disk; stdout is pointed at /dev/null so that
        # Python's final flush of the unwritten buffer does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except VQFRError as err:
        print(f"vqfr {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vqfr {args.command}: interrupted", file=sys.stderr)
        return 130

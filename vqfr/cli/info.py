"""``vqfr info``: versions and what this machine can run on."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, devices and where weights are looked up")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vqfr import __version__

    print(f"vqfr {__version__}")
    print(f"torch {torch.__version__}")
    print(f"cuda available: {torch.cuda.is_available()}")
    mps = getattr(torch.backends, "mps", None)
    print(f"mps available: {bool(mps and mps.is_available())}")
    return 0

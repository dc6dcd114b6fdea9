"""``vqfr info``: versions, devices, and which released weights are on this machine."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show versions, devices and where weights are looked up",
        description="Print the vqfr and torch versions, the devices torch can use, the weights folder "
        "($VQFR_HOME, default ~/.cache/vqfr) and which released models are already in it.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vqfr import __version__
    from vqfr.restore.zoo import DEFAULT_MODEL, ZOO, vqfr_home

    print(f"vqfr {__version__}, torch {torch.__version__}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    print(f"devices: cpu, cuda {'yes' if torch.cuda.is_available() else 'no'}, mps {'yes' if has_mps else 'no'}")
    home = vqfr_home()
    print(f"weights folder ($VQFR_HOME): {home}")
    for name, entry in ZOO.items():
        path = home / entry.filename
        state = "present" if path.is_file() else f"missing (download {entry.url})"
        default = " [default]" if name == DEFAULT_MODEL else ""
        print(f"  {name}{default}: {entry.filename} {state}")
    return 0

"""``python -m vqfr.train -c CONFIG`` — the entry point torchrun launches on every process."""

from __future__ import annotations

import sys

from vqfr.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

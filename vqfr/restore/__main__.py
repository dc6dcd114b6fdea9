"""``python -m vqfr.restore``: ``vqfr restore`` for launchers that start a module, above all torchrun.

``torchrun --nproc_per_node 4 -m vqfr.restore -i photos/ -o results`` (the options of ``vqfr restore``).
"""

from __future__ import annotations

import sys

from vqfr.cli import main

if __name__ == "__main__":
    sys.exit(main(["restore", *sys.argv[1:]]))

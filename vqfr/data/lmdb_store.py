"""Faces packed in an LMDB: the usual format for FFHQ (``ffhq_512.lmdb``).

Layout (compatible with BasicSR's packing): a folder ``NAME.lmdb`` holding the
LMDB environment and ``meta_info.txt`` with one line per image,
``KEY.png (H,W,C) COMPRESSION``; each value is the encoded image file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vqfr.errors import VQFRError
from vqfr.utils.atomic import atomic_write_text

from .images import decode_rgb_float, encode_png


def read_meta_keys(root: str | os.PathLike) -> list[str]:
    """The image keys listed in ``meta_info.txt``, in file order."""
    meta = Path(root) / "meta_info.txt"
    if not meta.is_file():
        raise VQFRError(f"{root} is not an image LMDB: {meta.name} is missing")
    keys = []
    for line in meta.read_text().splitlines():
        line = line.strip()
        if line:
            keys.append(line.split(" ")[0].rsplit(".", 1)[0])
    if not keys:
        raise VQFRError(f"{meta} lists no images")
    return keys


class LMDBReader:
    """Read-only access to an image LMDB; opens lazily so it can cross process boundaries."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise VQFRError(f"LMDB folder not found: {self.root}")
        self.keys = read_meta_keys(self.root)
        self._env = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_env"] = None  # an open environment cannot be pickled into DataLoader workers
        return state

    def get(self, index: int) -> np.ndarray:
        import lmdb

        if self._env is None:
            self._env = lmdb.open(str(self.root), readonly=True, lock=False, readahead=False, meminit=False)
        key = self.keys[index]
        with self._env.begin(write=False) as txn:
            data = txn.get(key.encode("ascii"))
        if data is None:
            raise VQFRError(f"key {key} listed in meta_info.txt is missing from {self.root}")
        return decode_rgb_float(data, f"{self.root}:{key}")


def write_lmdb(root: str | os.PathLike, items: Iterable[tuple[str, np.ndarray]]) -> int:
    """Pack ``(key, RGB image)`` pairs into a new LMDB at ``root`` as PNG; returns the count."""
    import lmdb

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise VQFRError(f"refusing to write an LMDB into non-empty {root}")
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    encoded = [(key, img.shape, encode_png(img)) for key, img in items]
    size = max(1 << 20, 2 * sum(len(b) for _, _, b in encoded))
    env = lmdb.open(str(root), map_size=size)
    with env.begin(write=True) as txn:
        for key, shape, data in encoded:
            txn.put(key.encode("ascii"), data)
            h, w = shape[:2]
            lines.append(f"{key}.png ({h},{w},3) 1")
    env.close()
    atomic_write_text(root / "meta_info.txt", "\n".join(lines) + "\n")
    return len(lines)

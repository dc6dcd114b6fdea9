"""Face datasets for training (HQ faces, degraded on the fly) and validation (LQ/GT pairs).

Samples are keyed by ``(epoch, index)``: the flip and the degradation of a sample
come from a generator seeded by ``(seed, epoch, index)``, so a run gives the same
batches whatever the number of loader workers, and a resumed run continues with
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vqfr.errors import VQFRError

from .degradations import DegradationConfig, degrade, sample_rng
from .images import list_images, read_image, resize_square, to_tensor
from .lmdb_store import LMDBReader


class ImageSource:
    """Images from a folder (recursively) or from an ``*.lmdb`` folder, by index."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.is_lmdb = self.root.suffix == ".lmdb" or (self.root / "meta_info.txt").is_file()
        if self.is_lmdb:
            self._lmdb = LMDBReader(self.root)
            self.names = list(self._lmdb.keys)
        else:
            self._files = list_images(self.root)
            self.names = [str(p.relative_to(self.root).with_suffix("")) for p in self._files]

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> np.ndarray:
        return self._lmdb.get(index) if self.is_lmdb else read_image(self._files[index])


class HQFaceDataset:
    """High-quality faces resized to ``size``, random horizontal flip, optional on-the-fly degradation.

    ``dataset[(epoch, index)]`` (or a plain ``index``, epoch 0) returns ``{'gt', 'name'}`` and,
    with a degradation, ``'lq'``; tensors are (3, size, size) in [-1, 1].
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int,
        hflip: bool = True,
        degradation: DegradationConfig | None = None,
        seed: int = 0,
    ) -> None:
        if size % 32 != 0 or size <= 0:
            raise VQFRError(f"training size must be a positive multiple of 32, got {size}")
        self.source = ImageSource(root)
        self.size = int(size)
        self.hflip = bool(hflip)
        self.degradation = degradation
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = sample_rng(self.seed, epoch, index)
        gt = resize_square(self.source.read(index), self.size)
        if self.hflip and rng.uniform() < 0.5:
            gt = np.ascontiguousarray(gt[:, ::-1])
        sample = {"gt": to_tensor(gt), "name": self.source.names[index]}
        if self.degradation is not None:
            sample["lq"] = to_tensor(degrade(gt, self.degradation, rng))
        return sample


class PairedFaceDataset:
    """Validation pairs: LQ and GT images matched by file name, or GT only degraded with a fixed seed.

    With ``lq_root=None`` the LQ image of GT ``i`` is ``degrade(gt, degradation, seed, i)``, the
    same every time. Without a degradation either (stage 1) the LQ image is the GT image itself.
    """

    def __init__(
        self,
        gt_root: str | os.PathLike,
        size: int,
        lq_root: str | os.PathLike | None = None,
        degradation: DegradationConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.gt = ImageSource(gt_root)
        self.size = int(size)
        self.degradation = degradation
        self.seed = int(seed)
        self.lq = None
        if lq_root is not None:
            self.lq = ImageSource(lq_root)
            lq_index = {n: i for i, n in enumerate(self.lq.names)}
            missing = [n for n in self.gt.names if n not in lq_index]
            if missing:
                raise VQFRError(f"{len(missing)} GT image(s) have no LQ image of the same name in {lq_root}")
            self._lq_of = [lq_index[n] for n in self.gt.names]

    def __len__(self) -> int:
        return len(self.gt)

    def __getitem__(self, index: int) -> dict:
        gt = resize_square(self.gt.read(index), self.size)
        if self.lq is not None:
            lq = resize_square(self.lq.read(self._lq_of[index]), self.size)
        elif self.degradation is not None:
            lq = degrade(gt, self.degradation, sample_rng(self.seed, index))
        else:
            lq = gt
        return {"gt": to_tensor(gt), "lq": to_tensor(lq), "name": self.gt.names[index]}


class InfiniteBatchSampler:
    """Endless, resumable, rank-aware batches of ``(epoch, index)`` keys.

    Each epoch shuffles with ``seed + epoch``; the permutation is tiled when the dataset is
    smaller than one global batch, and split across ranks like ``DistributedSampler``. Batch
    ``k`` of the run is a function of ``k`` only, so starting at ``start_batch`` resumes exactly.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        start_batch: int = 0,
    ) -> None:
        if num_samples <= 0:
            raise VQFRError("the training set is empty")
        self.n = int(num_samples)
        self.batch = int(batch_size)
        self.rank, self.world = int(rank), int(world_size)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.start_batch = int(start_batch)
        global_batch = self.batch * self.world
        self.tiles = -(-global_batch // self.n)  # ceil
        self.batches_per_epoch = (self.n * self.tiles) // global_batch

    def epoch_indices(self, epoch: int) -> list[int]:
        import torch

        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        perm = perm * self.tiles
        used = self.batches_per_epoch * self.batch * self.world
        return perm[:used][self.rank :: self.world]

    def __iter__(self):
        k = self.start_batch
        while True:
            epoch, within = divmod(k, self.batches_per_epoch)
            mine = self.epoch_indices(epoch)
            for b in range(within, self.batches_per_epoch):
                yield [(epoch, i) for i in mine[b * self.batch : (b + 1) * self.batch]]
            k = (epoch + 1) * self.batches_per_epoch

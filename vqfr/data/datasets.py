"""Face datasets for training (HQ faces, degraded on the fly) and validation (LQ/GT pairs).

Samples are keyed by ``(epoch, index)``: the flip and the degradation of a sample
come from a generator seeded by ``(seed, epoch, index)``, so a run gives the same
batches whatever the number of loader workers, and a resumed run continues with
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from vqfr.errors import VQFRError

from .degradations import DegradationConfig, degrade, sample_rng
from .images import list_image_files, read_rgb_float, resize_square_float, to_tensor
from .lmdb_store import LMDBReader


def check_patterns(value: Sequence[str] | None, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise VQFRError(f"{key} must be a list of file-name patterns such as [person1_*.jpg], got {value!r}")
    return tuple(value)


class ImageSource:
    """Images from a folder (recursively) or from an ``*.lmdb`` folder, by index.

    ``include`` / ``exclude`` are shell patterns (``fnmatch``) matched against each image's path
    relative to ``root`` (LMDB: its key), which is how a run holds whole people out of a folder.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        include, exclude = check_patterns(include, "include"), check_patterns(exclude, "exclude")
        self.is_lmdb = self.root.suffix == ".lmdb" or (self.root / "meta_info.txt").is_file()
        if self.is_lmdb:
            self._lmdb = LMDBReader(self.root)
            keys = [(i, k, k) for i, k in enumerate(self._lmdb.keys)]
        else:
            files = list_image_files(self.root)
            rels = [f.relative_to(self.root) for f in files]
            keys = [(f, rel.as_posix(), str(rel.with_suffix(""))) for f, rel in zip(files, rels)]

        def wanted(rel: str) -> bool:
            if include and not any(fnmatch.fnmatchcase(rel, p) for p in include):
                return False
            return not any(fnmatch.fnmatchcase(rel, p) for p in exclude)

        kept = [(ref, name) for ref, rel, name in keys if wanted(rel)]
        if not kept:
            raise VQFRError(f"no images left in {self.root} after the include/exclude patterns")
        self._refs = [ref for ref, _ in kept]
        self.names = [name for _, name in kept]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def files(self) -> list[Path]:
        """The image files kept (a folder source; an LMDB source has none)."""
        return [] if self.is_lmdb else list(self._refs)

    def read(self, index: int) -> np.ndarray:
        ref = self._refs[index]
        return self._lmdb.get(ref) if self.is_lmdb else read_rgb_float(ref)


@dataclass
class AugmentConfig:
    """Random photometric and geometric changes of the HQ face (before any degradation).

    Small enough to keep the face on the aligned template: the restorer sees aligned faces.
    ``scale`` is a [lo, hi] zoom range, ``rotate`` the largest rotation in degrees, ``shift``
    the largest translation as a fraction of the size, ``color`` the largest relative change of
    brightness, contrast and saturation.
    """

    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0
    shift: float = 0.0
    color: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig | None:
        if d is None:
            return None
        if not isinstance(d, dict):
            raise VQFRError(f"data.train.augment must be a mapping (scale, rotate, shift, color), got {d!r}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise VQFRError(f"unknown key(s) in data.train.augment: {', '.join(sorted(map(str, unknown)))}")
        cfg = cls(**d)
        s = cfg.scale
        ok = isinstance(s, (list, tuple)) and len(s) == 2 and all(_finite(v) and v > 0 for v in s) and s[0] <= s[1]
        if not ok:
            raise VQFRError(f"data.train.augment.scale must be [lo, hi] with 0 < lo <= hi, got {s!r}")
        cfg.scale = (float(s[0]), float(s[1]))
        for name, hi in (("rotate", 45.0), ("shift", 0.25), ("color", 0.5)):
            v = getattr(cfg, name)
            if not (_finite(v) and 0 <= v <= hi):
                raise VQFRError(f"data.train.augment.{name} must be a number in [0, {hi:g}], got {v!r}")
            setattr(cfg, name, float(v))
        return cfg


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def augment(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Apply ``cfg`` to a float RGB [0, 1] image with draws from ``rng`` (always the same 7 draws)."""
    h, w = img.shape[:2]
    zoom = rng.uniform(*cfg.scale)
    angle = rng.uniform(-cfg.rotate, cfg.rotate)
    dx, dy = rng.uniform(-cfg.shift, cfg.shift, 2) * (w, h)
    bright, contrast, sat = 1.0 + rng.uniform(-cfg.color, cfg.color, 3)
    if zoom != 1.0 or angle != 0.0 or dx != 0.0 or dy != 0.0:
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, zoom)
        m[:, 2] += (dx, dy)
        img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if cfg.color > 0:
        gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = gray[..., None] + sat * (img - gray[..., None])  # saturation around the pixel's grey
        img = (img - img.mean()) * contrast + img.mean()  # contrast around the image mean
        img = img * bright
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


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
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        augment: AugmentConfig | None = None,
    ) -> None:
        if size % 32 != 0 or size <= 0:
            raise VQFRError(f"training size must be a positive multiple of 32, got {size}")
        self.source = ImageSource(root, include, exclude)
        self.size = int(size)
        self.hflip = bool(hflip)
        self.degradation = degradation
        self.seed = int(seed)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = sample_rng(self.seed, epoch, index)
        gt = resize_square_float(self.source.read(index), self.size)
        if self.hflip and rng.uniform() < 0.5:
            gt = np.ascontiguousarray(gt[:, ::-1])
        if self.augment is not None:  # drawn after the flip, so runs without it keep their samples
            gt = augment(gt, self.augment, rng)
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
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> None:
        self.gt = ImageSource(gt_root, include, exclude)
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
        gt = resize_square_float(self.gt.read(index), self.size)
        if self.lq is not None:
            lq = resize_square_float(self.lq.read(self._lq_of[index]), self.size)
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

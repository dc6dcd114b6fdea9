"""Process groups for torchrun: DDP training and sharded restoration.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; with them we join a process
group (NCCL on GPUs, gloo on CPU) and pin each process to ``cuda:LOCAL_RANK``.
Multi-node runs use torchrun's usual ``--nnodes/--node_rank/--rdzv_*`` flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from vqfr.errors import VQFRError
from vqfr.utils.device import select_device

T = TypeVar("T")


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_size() -> int:
    """How many processes torchrun started for this run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(
    device: str = "auto", backend: str | None = None, timeout: timedelta = timedelta(minutes=30)
) -> DistInfo:
    """Join the torchrun process group if there is one; choose this process's device.

    ``backend``: None picks NCCL when the ranks run on CUDA, else gloo. ``timeout``: how long a
    collective waits for the slowest rank before failing.
    """
    world = world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise VQFRError(f"--device must be auto, cpu or cuda, got {device!r}")
    dev = select_device(device, allow_mps=False)
    use_cuda = dev.type == "cuda"
    if use_cuda:  # each process gets the GPU torchrun assigned it
        if local_rank >= torch.cuda.device_count():
            raise VQFRError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"), timeout=timeout)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank (keeps ranks in step on stop requests)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar logs across ranks (every rank must pass the same keys)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=info.device, dtype=torch.float64)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (on all ranks)."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_on_main(obj, info: DistInfo) -> list | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj, info: DistInfo):
    """Rank 0's ``obj``, on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class StoppedByOtherRank(VQFRError):
    """Another rank failed a :func:`together` step; rank 0 reports why, this rank just stops."""


def together(step: Callable[[], T], info: DistInfo, main_only: bool = False) -> T:
    """Run ``step()`` on every rank, or with ``main_only`` on rank 0 alone (every rank gets its result).

    A :class:`VQFRError` on any rank stops them all, so no rank waits forever for one that gave up:
    rank 0 raises it (naming the ranks when their messages differ), the others raise
    :class:`StoppedByOtherRank`. Other exceptions end their process (torchrun then stops the rest).
    """
    if not info.distributed:
        return step()
    result, error = None, None
    if info.is_main or not main_only:
        try:
            result = step()
        except VQFRError as err:
            error = str(err)
    failed = [(rank, err) for rank, err in enumerate(gather_objects(error, info)) if err is not None]
    if failed:
        if not info.is_main:
            raise StoppedByOtherRank(f"stopped: rank {failed[0][0]} failed")
        if failed[0][0] == 0 and len({err for _, err in failed}) == 1:
            raise VQFRError(failed[0][1])
        raise VQFRError("; ".join(f"rank {rank}: {err}" for rank, err in failed))
    return broadcast_from_main(result, info) if main_only else result

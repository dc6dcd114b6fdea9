"""Process-group setup for single-process and torchrun (DDP) training.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; with them we join a process
group (NCCL on GPUs, gloo on CPU) and pin each process to ``cuda:LOCAL_RANK``.
Multi-node runs use torchrun's usual ``--nnodes/--node_rank/--rdzv_*`` flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from vqfr.errors import VQFRError
from vqfr.utils.device import select_device


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


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one; choose this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
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
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
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

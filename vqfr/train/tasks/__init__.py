"""Which task trains which network: one entry of :data:`TASKS` per (stage, network arch).

A task (:class:`~vqfr.train.tasks.base.Task`) is what training one network means: its losses,
parameter groups and optimizers, what it logs and how it restores for validation. A new network
version is one entry here, plus a Task subclass (its own module) where its step differs from an
existing one. The config check reads this table too (which stage trains which arch, the stage-1
network a restoration network learns from, and the options only some networks honour).

Torch-free: the task classes are imported when a run builds its task.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vqfr.errors import VQFRError

if TYPE_CHECKING:
    from .base import Task


@dataclass(frozen=True)
class TaskSpec:
    task: str  # "module:Class" under vqfr.train.tasks
    stage1: str | None = None  # restoration: the arch of the frozen stage-1 network it learns from
    options: tuple[str, ...] = ()  # config keys only this network honours (setting them elsewhere is an error)


TASKS: dict[tuple[str, str], TaskSpec] = {
    ("codebook", "VQGANv1"): TaskSpec("vqgan:VQGANTask"),
    ("codebook", "VQGANv2"): TaskSpec("vqgan:VQGANTask", options=("train.restart_dead_codes_every",)),
    ("restoration", "VQFRv1"): TaskSpec("vqfr_v1:VQFRv1Task", stage1="VQGANv1"),
    ("restoration", "VQFRv2"): TaskSpec(
        "vqfr_v2:VQFRv2Task", stage1="VQGANv2", options=("train.main_branch_start", "network.zero_init_main_branch")
    ),
}


def trained_archs(stage: str) -> list[str]:
    """The network archs ``stage`` trains."""
    return [arch for (s, arch) in TASKS if s == stage]


def task_class(stage: str, arch: str) -> type[Task]:
    spec = TASKS.get((stage, arch))
    if spec is None:
        raise VQFRError(f"stage {stage} trains {'/'.join(trained_archs(stage)) or 'nothing'}, not {arch}")
    module, name = spec.task.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def build_task(cfg: dict, g: Any, **kwargs: Any) -> Task:
    """The task that trains ``g`` as ``cfg`` describes (see :class:`~vqfr.train.tasks.base.Task` for ``kwargs``)."""
    return task_class(cfg["stage"], cfg["network"]["arch"])(cfg, g, **kwargs)

"""Which task trains which network: the ``task`` of its entry in :mod:`vqfr.nn.registry`.

A task (:class:`~vqfr.train.tasks.base.Task`) is what training one network means: its losses,
parameter groups and optimizers, what it logs and how it restores for validation. A new network
version is one registry entry naming its task, plus a Task subclass (its own module) where its
step differs from an existing one. The config check reads the same entry (which stage trains it,
the stage-1 network it learns from, and ``train_options``, the options only it honours).

Torch-free: the task classes are imported when a run builds its task.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vqfr.errors import VQFRError
from vqfr.nn.registry import architecture, architectures

if TYPE_CHECKING:
    from .base import Task


def trained_archs(stage: str) -> list[str]:
    """The registered network archs ``stage`` trains (those whose registry entry names a task)."""
    return [a.name for a in architectures(stage) if a.task]


def task_class(stage: str, arch: str) -> type[Task]:
    """The Task class that trains ``arch`` (its registry entry's ``task``)."""
    if arch not in trained_archs(stage):
        raise VQFRError(f"stage {stage} trains {'/'.join(trained_archs(stage)) or 'nothing'}, not {arch}")
    module, name = architecture(arch).task.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def build_task(cfg: dict, g: Any, **kwargs: Any) -> Task:
    """The task that trains ``g`` as ``cfg`` describes (see :class:`~vqfr.train.tasks.base.Task` for ``kwargs``)."""
    return task_class(cfg["stage"], cfg["network"]["arch"])(cfg, g, **kwargs)

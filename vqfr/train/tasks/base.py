"""The part of a training step every network shares; a task subclass adds what is its own.

A task is what training one network means: the generator and its frozen helpers, the parameter
groups and their optimizers, the EMA, the loss terms and discriminators, one training step, and how
the network restores an image for validation. The :class:`~vqfr.train.trainer.Trainer` runs the
loop around it (data, schedule, logging, checkpoints, processes).

One step (the published recipe, generalised over the networks):
1. the task's :meth:`Task.forward`: generator outputs and its own loss terms (codebook, code matching);
2. image losses of every output that carries gradients: L1 (``losses.pixel``), perceptual (+ style);
3. the generator term of every active discriminator (optionally with the adaptive weight, measured
   at the task's :meth:`Task.last_layer`); one generator update on the sum;
4. the task's :meth:`Task.after_generator_step`; one update of every active discriminator; the EMA.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from vqfr.errors import VQFRError
from vqfr.nn.quantize import L2VectorQuantizerKmeans

from ..adversary import Adversary
from ..ema import EMA
from ..losses import adaptive_weight, l1_loss
from ..optim import adam, lr_factor, set_lr
from ..perceptual import build_perceptual


class Task:
    """Train one network: subclasses fill in :meth:`forward`, :meth:`restore`, :meth:`grid_columns` and the hooks."""

    #: The ``train.*`` optimizer block of each parameter group :meth:`param_groups` returns.
    optimizer_keys: dict[str, str] = {"g": "optim_g"}
    #: Validation restores a degraded copy of each GT image (else the network reconstructs the GT itself).
    restores_lq: bool = True

    def __init__(
        self,
        cfg: dict,
        g: nn.Module,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        sync_batchnorm: bool = False,
    ) -> None:
        """Set up the training of ``g`` (built from ``cfg`` and on ``device``); builds the loss networks.

        The construction order is part of the run: every network built here draws its initial
        weights from the global RNG (seeded by the trainer).
        """
        self.cfg = cfg
        self.losses = cfg["losses"]
        self.g = g  # the bare module: checkpoints, EMA, validation
        self.g_train = g  # what the step calls: the trainer puts a DDP wrapper here in distributed runs
        self.device = device
        self.amp_dtype = amp_dtype
        self.last: dict[str, Tensor | None] = {}  # the last step's batch and outputs, for image grids
        self.prepare()
        groups = self.param_groups()
        optimized = {id(p) for group in groups.values() for p in group}
        # Parameters that need gradients but no optimizer updates (VQFRv2's shared output conv).
        self.measure_only = [p for p in g.parameters() if p.requires_grad and id(p) not in optimized]
        n_train = sum(p.numel() for p in g.parameters() if id(p) in optimized)
        n_all = sum(p.numel() for p in g.parameters())
        self.param_summary = f"{n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M generator parameters trained"
        train = cfg["train"]
        self.g_opts = {k: adam(v, train[self.optimizer_keys[k]]) for k, v in groups.items()}
        self.base_lrs = {k: float(train[self.optimizer_keys[k]]["lr"]) for k in groups}
        self.ema = EMA(g, train["ema_decay"]) if train["ema_decay"] > 0 else None
        self.perceptual = build_perceptual(self.losses["perceptual"])
        if self.perceptual is not None:
            self.perceptual.to(device)
        self.perceptual_name = self.perceptual.name if self.perceptual is not None else "none"
        self.adversaries = [Adversary.build(d, train["optim_d"], device, sync_batchnorm) for d in cfg["discriminators"]]

    # ------------------------------------------------------------------ what a task fills in

    def prepare(self) -> None:
        """Before the parameter groups: frozen helper networks, initialisation of the generator."""

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trained parameters by optimizer group (keys of :attr:`optimizer_keys`); sets ``requires_grad`` to match."""
        return {"g": [p for p in self.g.parameters() if p.requires_grad]}  # honours the network's fix_keys

    def forward(self, gt: Tensor, lq: Tensor | None, step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Generator outputs by name (``dec``, ``main_dec``, ...) and the task's own weighted loss terms.

        Runs under autocast. An output without gradients gets no image losses and no adversary.
        """
        raise NotImplementedError

    def last_layer(self, output: str) -> Tensor:
        """The weight where the adaptive GAN weight of a discriminator on ``output`` is measured."""
        return self.g.get_last_layer()

    def after_generator_step(self, step: int, gt: Tensor, logs: dict[str, Tensor]) -> None:
        """After the generator update, before the discriminators (e.g. dead-code restarts); may add logs."""

    def restore(self, net: nn.Module, lq: Tensor, gt: Tensor) -> Tensor:
        """Validation: ``net``'s (the EMA network's) restoration of one (1, 3, H, W) input in [-1, 1]."""
        raise NotImplementedError

    def grid_columns(self) -> list[Tensor]:
        """The image-grid columns of the last step (each (b, 3, H, W) in [-1, 1])."""
        raise NotImplementedError

    # ------------------------------------------------------------------ one step

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def set_lr(self, step: int) -> None:
        """Learning rates of ``step`` for every optimizer (``train.scheduler``)."""
        factor = lr_factor(self.cfg["train"]["scheduler"], step)
        for k, o in self.g_opts.items():
            set_lr(o, self.base_lrs[k] * factor)
        d_lr = float(self.cfg["train"]["optim_d"]["lr"]) * factor
        for a in self.adversaries:
            set_lr(a.optimizer, d_lr)

    def learning_rates(self) -> dict[str, float]:
        return {f"g_{k}": o.param_groups[0]["lr"] for k, o in self.g_opts.items()}

    def train_step(self, batch: dict, step: int) -> dict[str, Tensor]:
        """One generator update and one update of every active discriminator; returns detached logs."""
        gt = batch["gt"].to(self.device, non_blocking=True)
        lq = batch["lq"].to(self.device, non_blocking=True) if "lq" in batch else None
        for a in self.adversaries:
            a.net.requires_grad_(False)
        with self.autocast():
            outputs, terms = self.forward(gt, lq, step)
        outputs = {k: v.float() for k, v in outputs.items()}
        trained = {k for k, v in outputs.items() if v.requires_grad}
        active = [a for a in self.adversaries if a.is_active(step, trained)]
        by_output = self.image_losses(outputs, gt, trained)
        for key, parts in by_output.items():
            for name, value in parts.items():
                terms[f"{name}_{key}"] = value
        for a in active:
            terms.update(self.adversarial_terms(a, outputs[a.target], by_output[a.target]))
        logs = self.generator_update(terms)
        self.after_generator_step(step, gt, logs)
        r1_weight, r1_every = float(self.losses["r1_weight"]), int(self.losses["r1_every"])
        for a in active:
            logs.update(a.update(outputs[a.target], gt, step, r1_weight, r1_every, self.autocast))
        for a in self.adversaries:
            a.net.requires_grad_(False)
        if self.ema is not None:
            self.ema.update(self.g)
        self.last = {"gt": gt, "lq": lq, **{k: v.detach() for k, v in outputs.items()}}
        return logs

    def image_losses(self, outputs: dict[str, Tensor], gt: Tensor, trained: set[str]) -> dict[str, dict[str, Tensor]]:
        """``{output: {pixel|perceptual|style: weighted term}}`` for the trained outputs."""
        by_output: dict[str, dict[str, Tensor]] = {k: {} for k in outputs}
        for key, w in self.losses["pixel"].items():
            if w and key in trained:
                by_output[key]["pixel"] = float(w) * l1_loss(outputs[key], gt)
        if self.perceptual is not None:
            for key in self.losses["perceptual"].get("outputs", ["dec"]):  # not None: perceptual is on
                if key not in trained:
                    continue
                p, s = self.perceptual(outputs[key], gt)
                by_output[key]["perceptual"] = p
                if s is not None:
                    by_output[key]["style"] = s
        return by_output

    def adversarial_terms(self, a: Adversary, fake: Tensor, image_terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """The generator term of discriminator ``a`` on ``fake`` (and its adaptive weight, logged, not summed)."""
        g_loss = a.generator_loss(fake, self.autocast)
        terms = {}
        weight = a.g_weight
        if a.adaptive:
            recon = [image_terms[t] for t in a.adaptive if t in image_terms]
            if not recon:
                raise VQFRError(f"discriminator {a.name}: none of its adaptive terms is computed")
            aw = adaptive_weight(sum(recon), g_loss, self.last_layer(a.target))
            terms[f"adaptive_w_{a.name}"] = aw
            weight = weight * aw
        terms[f"g_gan_{a.name}"] = weight * g_loss
        return terms

    def generator_update(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """One step of every generator optimizer on the sum of ``terms``; returns them detached, with ``g_total``."""
        total = sum(v for k, v in terms.items() if not k.startswith("adaptive_w_"))
        if not isinstance(total, Tensor) or not total.requires_grad:
            raise VQFRError("no loss term reaches the trained parameters at this step: check the losses block")
        for o in self.g_opts.values():
            o.zero_grad(set_to_none=True)
        total.backward()
        for o in self.g_opts.values():
            o.step()
        for p in self.measure_only:
            p.grad = None
        logs = {k: v.detach() for k, v in terms.items()}
        logs["g_total"] = total.detach()
        return logs

    # ------------------------------------------------------------------ state

    @property
    def eval_net(self) -> nn.Module:
        """The network that is validated and exported: the EMA copy if there is one."""
        return self.ema.module if self.ema is not None else self.g

    def kmeans_quantizers(self) -> list[tuple[str, L2VectorQuantizerKmeans]]:
        """The v1 quantizers whose k-means reservoir is part of the training state."""
        return [(n, m) for n, m in self.g.named_modules() if isinstance(m, L2VectorQuantizerKmeans)]

    def state_dict(self) -> dict[str, Any]:
        """The task's part of a training checkpoint: ``nets``, ``ema``, ``optims``, ``quantizers``, ``code_usage``."""
        return {
            "nets": {"g": self.g.state_dict(), **{a.name: a.net.state_dict() for a in self.adversaries}},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optims": {
                **{f"g_{k}": o.state_dict() for k, o in self.g_opts.items()},
                **{f"d_{a.name}": a.optimizer.state_dict() for a in self.adversaries},
            },
            "quantizers": {name: m.training_state() for name, m in self.kmeans_quantizers()},
            "code_usage": None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s part of ``state`` (KeyError, RuntimeError or ValueError if it does not fit)."""
        self.g.load_state_dict(state["nets"]["g"])
        for a in self.adversaries:
            a.net.load_state_dict(state["nets"][a.name])
        if self.ema is not None:  # a checkpoint written without EMA starts it from the weights
            self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["nets"]["g"])
        for k, o in self.g_opts.items():
            o.load_state_dict(state["optims"][f"g_{k}"])
        for a in self.adversaries:
            a.optimizer.load_state_dict(state["optims"][f"d_{a.name}"])
        saved_quantizers = state.get("quantizers") or {}
        for name, m in self.kmeans_quantizers():
            if name in saved_quantizers:
                m.load_training_state(saved_quantizers[name])

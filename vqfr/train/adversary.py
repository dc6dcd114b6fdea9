"""One discriminator of a run: its network, its optimizer and the options of its two loss terms.

Every task trains its generator against the ``discriminators`` of its config the same way:
* generator side: ``g_weight`` (times the adaptive weight, see :func:`~vqfr.train.losses.adaptive_weight`)
  times the generator GAN loss of D(``target`` output), computed by the task;
* discriminator side (:meth:`Adversary.update`): ``d_loss_scale`` times the GAN loss on real vs
  detached fake, plus lazy R1 every ``r1_every`` steps for those with ``r1: true``.
A discriminator is active for steps after its ``start_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .discriminators import build_discriminator
from .losses import discriminator_gan_loss, generator_gan_loss, r1_penalty
from .optim import adam


@dataclass
class Adversary:
    """A discriminator with its optimizer and its entry of the config's ``discriminators`` list."""

    name: str
    net: nn.Module  # the bare module (generator-side terms, checkpoints)
    optimizer: torch.optim.Optimizer
    loss: str  # softplus | hinge
    target: str  # the generator output it judges
    g_weight: float
    adaptive: tuple[str, ...]  # loss terms whose gradient norm balances the generator term
    d_loss_scale: float
    start_step: int
    r1: bool
    wrapped: nn.Module | None = None  # the DDP wrapper in distributed runs (discriminator updates)

    @classmethod
    def build(cls, d: dict, optim_d: dict, device: torch.device, sync_batchnorm: bool = False) -> Adversary:
        """The discriminator of config entry ``d`` on ``device``, with an Adam optimizer from ``optim_d``."""
        net = build_discriminator(d["arch"], d["config"]).to(device)
        if sync_batchnorm:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return cls(
            name=d["name"],
            net=net,
            optimizer=adam(net.parameters(), optim_d),
            loss=d["loss"],
            target=d["target"],
            g_weight=float(d["g_weight"]),
            adaptive=tuple(d["adaptive"] or ()),
            d_loss_scale=float(d["d_loss_scale"]),
            start_step=int(d["start_step"]),
            r1=bool(d["r1"]),
        )

    def is_active(self, step: int, trained: set[str]) -> bool:
        """Past its start step, and its target carries gradients (else it could not change the generator)."""
        return step > self.start_step and self.target in trained

    def generator_loss(self, fake: Tensor, autocast: Callable[[], AbstractContextManager]) -> Tensor:
        """The generator's GAN loss on D(fake), unweighted (the discriminator's weights are not trained by it)."""
        with autocast():
            pred = self.net(fake)
        return generator_gan_loss(pred.float(), self.loss)

    def update(
        self,
        fake: Tensor,
        real: Tensor,
        step: int,
        r1_weight: float,
        r1_every: int,
        autocast: Callable[[], AbstractContextManager],
    ) -> dict[str, Tensor]:
        """One optimizer step on real vs ``fake`` (detached), with lazy R1 on its steps; returns detached logs."""
        d = self.wrapped if self.wrapped is not None else self.net
        self.net.requires_grad_(True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast():
            fake_pred = d(fake.detach())
            real_pred = d(real)
        d_loss = self.d_loss_scale * discriminator_gan_loss(real_pred.float(), fake_pred.float(), self.loss)
        d_loss.backward()
        logs = {
            f"d_{self.name}": d_loss.detach(),
            f"real_score_{self.name}": real_pred.detach().float().mean(),
            f"fake_score_{self.name}": fake_pred.detach().float().mean(),
        }
        if self.r1 and step % r1_every == 0:
            real = real.detach().requires_grad_(True)
            pred = d(real)
            r1 = r1_penalty(pred.float(), real)
            # 0 * pred keeps every parameter in the graph, which DDP's reducer requires.
            (r1_weight / 2 * r1 * r1_every + 0.0 * pred.float().mean()).backward()
            logs[f"r1_{self.name}"] = r1.detach()
        self.optimizer.step()
        return logs

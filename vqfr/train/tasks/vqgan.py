"""Stage 1: the codebook. VQGANv1 / VQGANv2 reconstruct the HQ face through their quantizer.

Losses: the image losses on ``dec`` plus ``losses.codebook_weight`` times the quantizer's loss
(codebook + commitment). VQGANv2 can restart dead codes (``train.restart_dead_codes_every``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..codebook import DeadCodeRestarter
from .base import Task


class VQGANTask(Task):
    restores_lq = False  # validation reconstructs the GT images

    def prepare(self) -> None:
        every = int(self.cfg["train"]["restart_dead_codes_every"])
        self.restarter = DeadCodeRestarter(self.g.quantizer.num_code, every, int(self.cfg["seed"])) if every else None

    def forward(self, gt: Tensor, lq: Tensor | None, step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        res, cb_loss = self.g_train(gt, iters=step, return_keys=("dec",))
        if self.restarter is not None:
            self.restarter.update(res["quant_index"])
        terms = {}
        if self.losses["codebook_weight"]:
            terms["codebook"] = float(self.losses["codebook_weight"]) * cb_loss.float()
        return {"dec": res["dec"]}, terms

    def after_generator_step(self, step: int, gt: Tensor, logs: dict[str, Tensor]) -> None:
        if self.restarter is None:
            return
        emb = self.g.quantizer.embedding.weight
        ema_emb = self.ema.module.quantizer.embedding.weight.data if self.ema is not None else None
        moved = self.restarter.restart(step, self.g.encoder, gt, emb, self.g_opts["g"], ema_emb)
        if moved is not None:
            logs["codes_restarted"] = torch.tensor(float(moved))

    def restore(self, net: nn.Module, lq: Tensor, gt: Tensor) -> Tensor:
        return net(gt)[0]["dec"]

    def grid_columns(self) -> list[Tensor]:
        return [self.last["gt"], self.last["dec"]]  # GT | reconstruction

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.restarter is not None:  # the usage counts since the last check
            state["code_usage"] = self.restarter.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.restarter is not None and state.get("code_usage") is not None:
            self.restarter.load_state_dict(state["code_usage"])

"""Stage 2: what the restoration networks (VQFRv1, VQFRv2) share.

The network restores the degraded face ``lq``; the frozen stage-1 VQGAN (``stage1.weights``)
encodes the HQ face into the target codes and features of the code-matching losses, and (with
``network.init_from_stage1``) gives the generator its encoder, codebook and texture decoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vqfr.nn.precision import full_precision

from ..nets import init_from_stage1, load_stage1
from .base import Task


class RestorationTask(Task):
    def prepare(self) -> None:
        self.g1 = load_stage1(self.cfg).to(self.device)  # eval mode, no gradients
        if self.cfg["network"]["init_from_stage1"]:
            init_from_stage1(self.g, self.g1)

    def stage1_targets(self, gt: Tensor, **kwargs: Any) -> dict[str, Any]:
        """The frozen stage-1 network's outputs for ``gt`` (its first return value), in float32 even under autocast.

        They are the labels of the code-matching losses: encoded in bfloat16, about 1 % of the
        target codes of the VQFR-lite stage 1 changed (near-ties decided by rounded features),
        and the fp32 forward without gradients costs little (0.27 vs 0.22 s at batch 2, 256 px, CPU).
        """
        with torch.no_grad(), full_precision(gt):
            return self.g1(gt.float(), **kwargs)[0]

    def grid_columns(self) -> list[Tensor]:
        last = self.last
        texture = last["texture_dec"] if "texture_dec" in last else last["dec"]
        return [last["lq"], texture, last["main_dec"], last["gt"]]  # LQ | texture | main | GT

"""Stage 2: what the restoration networks (VQFRv1, VQFRv2) share.

The network restores the degraded face ``lq``; the frozen stage-1 VQGAN (``stage1.weights``)
encodes the HQ face into the target codes and features of the code-matching losses, and (with
``network.init_from_stage1``) gives the generator its encoder, codebook and texture decoder.
"""

from __future__ import annotations

from torch import Tensor

from ..nets import init_from_stage1, load_stage1
from .base import Task


class RestorationTask(Task):
    def prepare(self) -> None:
        self.g1 = load_stage1(self.cfg).to(self.device)  # eval mode, no gradients
        if self.cfg["network"]["init_from_stage1"]:
            init_from_stage1(self.g, self.g1)

    def grid_columns(self) -> list[Tensor]:
        last = self.last
        texture = last["texture_dec"] if "texture_dec" in last else last["dec"]
        return [last["lq"], texture, last["main_dec"], last["gt"]]  # LQ | texture | main | GT

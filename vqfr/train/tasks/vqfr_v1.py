"""Stage 2, VQFRv1: texture decoder ``dec`` and main decoder ``main_dec`` both trained.

Only the codebook is frozen (the network's ``fix_keys``). ``losses.quant_feature_weight``: MSE
between the LQ encoder's features before quantization and the stage-1 network's at every
quantized level. A discriminator on ``main_dec`` measures its adaptive weight at the main
decoder's output conv.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..losses import mse_loss
from .restoration import RestorationTask


class VQFRv1Task(RestorationTask):
    def forward(self, gt: Tensor, lq: Tensor | None, step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        res = self.g_train(lq, iters=step, return_keys=("dec", "feat_dict"))
        terms = {}
        if self.losses["quant_feature_weight"]:
            hq = self.stage1_targets(gt, return_keys=("feat_dict",))
            w = float(self.losses["quant_feature_weight"])
            terms["quant_feature"] = w * sum(
                mse_loss(res["feat_dict"][lvl]["z_conv"].float(), hq["feat_dict"][lvl]["z_quant_before_conv"].float())
                for lvl in res["feat_dict"]
            )
        return {"dec": res["dec"], "main_dec": res["main_dec"]}, terms

    def last_layer(self, output: str) -> Tensor:
        return self.g.get_main_last_layer() if output == "main_dec" else self.g.get_last_layer()

    def restore(self, net: nn.Module, lq: Tensor, gt: Tensor) -> Tensor:
        return net(lq, return_keys=("dec",))["main_dec"]

"""Stage 2, VQFRv2 (the published recipe): the code predictor and the main branch are trained.

Parameter groups: ``enc`` (``train.optim_g``) = encoder + code predictor (``feat2index``);
``main`` (``train.optim_g_main``) = main branch + input-feature conv (without ``optim_g_main``
both are one group). Everything else — codebook, texture decoder and the output conv it shares
with the main branch — is frozen; that conv's weight keeps ``requires_grad`` only so the adaptive
GAN weight can be measured there, no optimizer holds it.

Losses: ``quant_feature_weight`` (MSE between the LQ encoding and the HQ quantized feature) and
``quant_index_weight`` (cross-entropy of the predicted code logits against the HQ code indices),
plus the image losses on ``main_dec`` (the frozen ``texture_dec`` gets none).

Short-run options: ``train.main_branch_start`` (steps up to it train the code predictor alone, at
fidelity 0) and ``network.zero_init_main_branch``.
"""

from __future__ import annotations

from torch import Tensor, nn

from vqfr.errors import VQFRError

from ..losses import code_index_loss, mse_loss
from ..nets import zero_init_main_branch
from .restoration import RestorationTask


class VQFRv2Task(RestorationTask):
    optimizer_keys = {"enc": "optim_g", "main": "optim_g_main"}

    def prepare(self) -> None:
        super().prepare()
        if self.cfg["network"]["zero_init_main_branch"]:
            zero_init_main_branch(self.g)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        enc, main = [], []
        last = self.g.get_last_layer()
        for name, p in self.g.named_parameters():
            if name.startswith(("encoder.", "feat2index.")):
                enc.append(p)
                p.requires_grad_(True)
            elif name.startswith(("main_branch.", "inpfeat_extraction.")):
                main.append(p)
                p.requires_grad_(True)
            else:
                p.requires_grad_(p is last)  # frozen; the last layer only measures gradients
        if self.cfg["train"]["optim_g_main"]:
            return {"enc": enc, "main": main}
        return {"enc": enc + main}

    def forward(self, gt: Tensor, lq: Tensor | None, step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        # Up to main_branch_start only the code predictor trains: at fidelity 0 the network skips
        # the main branch, main_dec is the (frozen) texture output and its image losses drop out.
        codes_only = step <= int(self.cfg["train"]["main_branch_start"])
        ratio = 0.0 if codes_only else float(self.cfg["train"]["fidelity_ratio"])
        res = self.g_train(lq, fidelity_ratio=ratio)
        hq = self.stage1_targets(gt, return_keys=())
        terms = {}
        if self.losses["quant_feature_weight"]:
            w = float(self.losses["quant_feature_weight"])
            terms["quant_feature"] = w * mse_loss(res["enc_feat"].float(), hq["quant_feat"].float())
        if self.losses["quant_index_weight"]:
            if "quant_logit" not in res:
                raise VQFRError("losses.quant_index_weight needs code_selection_mode: Predict")
            w = float(self.losses["quant_index_weight"])
            terms["quant_index"] = w * code_index_loss(res["quant_logit"], hq["quant_index"])
        return {"main_dec": res["main_dec"], "texture_dec": res["texture_dec"]}, terms

    def restore(self, net: nn.Module, lq: Tensor, gt: Tensor) -> Tensor:
        ratio = float((self.cfg["data"]["val"] or {}).get("fidelity_ratio", 1.0))
        return net(lq, fidelity_ratio=ratio)["main_dec"]

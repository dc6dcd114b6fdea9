"""VQFRv2: the restoration network (encoder, code selection, texture decoder, main branch)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqfr.nn.init import init_weights
from vqfr.nn.precision import full_precision, to_dtype_of
from vqfr.nn.quantize import L2VectorQuantizer
from vqfr.nn.vqgan_v2 import Decoder, Encoder
from vqfr.nn.warping import MainDecoder

CODE_SELECTION_MODES = ("Predict", "Nearest")


class VQFRv2(nn.Module):
    """Restore a degraded face; ``fidelity_ratio`` 0 gives the texture image, 1 the most faithful.

    ``forward(x_lq, fidelity_ratio)`` returns a dict: ``main_dec`` (the restored image),
    ``texture_dec`` (decoded from the selected codes), ``enc_feat`` and, in ``Predict`` mode,
    ``quant_logit`` (b, h*w, num_code).
    """

    def __init__(
        self,
        base_channels: int,
        channel_multipliers: Sequence[int],
        num_enc_blocks: int,
        use_enc_attention: bool,
        num_dec_blocks: int,
        use_dec_attention: bool,
        code_dim: int,
        inpfeat_dim: int,
        code_selection_mode: str,
        align_opt: dict,
        quantizer_opt: dict,
    ) -> None:
        super().__init__()
        if code_selection_mode not in CODE_SELECTION_MODES:
            raise ValueError(f"code_selection_mode must be one of {CODE_SELECTION_MODES}, got {code_selection_mode!r}")
        self.code_selection_mode = code_selection_mode
        self.encoder = Encoder(base_channels, channel_multipliers, num_enc_blocks, use_enc_attention, code_dim)
        q = {k: v for k, v in quantizer_opt.items() if k != "type"}
        if code_selection_mode == "Predict":
            self.feat2index = nn.Sequential(nn.LayerNorm(q["code_dim"]), nn.Linear(q["code_dim"], q["num_code"]))
        else:
            self.feat2index = None
        self.decoder = Decoder(base_channels, channel_multipliers, num_dec_blocks, use_dec_attention, code_dim)
        self.main_branch = MainDecoder(base_channels, channel_multipliers, align_opt)
        self.inpfeat_extraction = nn.Conv2d(3, inpfeat_dim, kernel_size=3, padding=1)
        self.quantizer = L2VectorQuantizer(**q)
        self.apply(init_weights)

    def get_last_layer(self) -> Tensor:
        return self.decoder.conv_out[-1].weight

    def select_codes(self, enc_feat: Tensor) -> tuple[Tensor, Tensor | None]:
        """Quantized feature for the encoding, and the code logits in ``Predict`` mode.

        In the head's dtype (float32 unless the whole network was cast) with autocast off: the head,
        the distances and the argmax decide discrete codes, and a rounded logit would pick a
        different code where two are close.
        """
        with full_precision(enc_feat):
            if self.feat2index is None:
                quant_feat, _, _ = self.quantizer(enc_feat)  # distances in at least float32
                return quant_feat, None
            enc_feat = to_dtype_of(enc_feat, self.feat2index)
            b, c, h, w = enc_feat.shape
            logits = self.feat2index(enc_feat.permute(0, 2, 3, 1).reshape(b, h * w, c))
            return self.quantizer.get_feature(logits.argmax(dim=-1), (h, w)), logits

    def forward(self, x_lq: Tensor, fidelity_ratio: float | Tensor = 1.0) -> dict[str, Tensor]:
        """``fidelity_ratio`` may be a tensor (ONNX export): then the main branch always runs."""
        enc_feat = self.encoder(to_dtype_of(x_lq, self.encoder))
        res = {"enc_feat": enc_feat}
        quant_feat, logits = self.select_codes(enc_feat)
        if logits is not None:
            res["quant_logit"] = logits
        with torch.no_grad():  # the texture branch is frozen in stage 2
            texture_dec, feats = self.decoder(to_dtype_of(quant_feat, self.decoder), return_feat=True)
        res["texture_dec"] = texture_dec
        if not isinstance(fidelity_ratio, Tensor) and fidelity_ratio == 0:
            # feats['Level_1'] + 0 * x == feats['Level_1']: skip the main branch entirely.
            res["main_dec"] = texture_dec
            return res
        inp_feat = self.inpfeat_extraction(to_dtype_of(x_lq, self.inpfeat_extraction))
        main_feat = self.main_branch(feats, to_dtype_of(inp_feat, self.main_branch), fidelity_ratio=fidelity_ratio)
        res["main_dec"] = self.decoder.conv_out(to_dtype_of(main_feat, self.decoder.conv_out))
        return res

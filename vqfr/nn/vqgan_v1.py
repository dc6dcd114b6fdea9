"""VQGANv1: the paper's first codebook network (bilinear-resampling levels, k-means quantizer)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from vqfr.nn.init import freeze_matching, init_weights
from vqfr.nn.layers import ResnetBlockV1, UpDownSample, conv3, norm_act_conv
from vqfr.nn.quantize import GeneralizedQuantizer


def level_channels(base_channels: int, patch_size: int, channel_multipliers: Sequence[int]) -> dict[str, int]:
    """``{'Level_1': c_0, 'Level_2': c_1, ...}`` up to ``Level_{patch_size}``."""
    return {f"Level_{2**s}": base_channels * channel_multipliers[s] for s in range(int(math.log2(patch_size)) + 1)}


class EncoderV1(nn.Module):
    """Image -> dict of encodings at the levels named in ``quant_level``."""

    def __init__(
        self,
        base_channels: int,
        proj_patch_size: int,
        resolution_scale_rates: Sequence[float],
        channel_multipliers: Sequence[int],
        encoder_num_blocks: int,
        quant_level: Sequence[str],
    ) -> None:
        super().__init__()
        chans = level_channels(base_channels, proj_patch_size, channel_multipliers)
        names = list(chans)
        self.levels = names
        self.quant_level = list(quant_level)
        self.conv_in = conv3(3, chans["Level_1"])
        self.encoder_dict = nn.ModuleDict()
        self.pre_downsample_dict = nn.ModuleDict()
        for s, name in enumerate(names):
            prev = chans[names[max(s - 1, 0)]]
            c = chans[name]
            self.encoder_dict[name] = nn.Sequential(*[ResnetBlockV1(c, c) for _ in range(encoder_num_blocks)])
            self.pre_downsample_dict[name] = UpDownSample(prev, c, resolution_scale_rates[s], "down")
        self.enc_convout_dict = nn.ModuleDict({name: norm_act_conv(chans[name], chans[name]) for name in quant_level})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.conv_in(x)
        out = {}
        for name in self.levels:
            x = self.encoder_dict[name](self.pre_downsample_dict[name](x))
            if name in self.enc_convout_dict:
                out[name] = self.enc_convout_dict[name](x)
        return out


class DecoderV1(nn.Module):
    """Quantized coarsest-level map -> image (and the feature of every level)."""

    def __init__(
        self,
        base_channels: int,
        proj_patch_size: int,
        resolution_scale_rates: Sequence[float],
        channel_multipliers: Sequence[int],
        decoder_num_blocks: int,
    ) -> None:
        super().__init__()
        chans = level_channels(base_channels, proj_patch_size, channel_multipliers)
        names = list(chans)
        rates = list(resolution_scale_rates)[::-1]  # read in reverse: Level_1 gets the last rate
        self.levels = names[::-1]  # coarsest first
        self.decoder_dict = nn.ModuleDict()
        self.pre_upsample_dict = nn.ModuleDict()
        for s in reversed(range(len(names))):
            name = names[s]
            prev = chans[names[min(s + 1, len(names) - 1)]]
            c = chans[name]
            self.decoder_dict[name] = nn.Sequential(*[ResnetBlockV1(c, c) for _ in range(decoder_num_blocks)])
            self.pre_upsample_dict[name] = UpDownSample(prev, c, rates[s], "up")
        self.conv_out = norm_act_conv(chans["Level_1"], 3)

    def forward(self, quant: dict[str, Tensor], return_feat: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        x = quant[self.levels[0]]
        feats = {}
        for name in self.levels:
            x = self.decoder_dict[name](self.pre_upsample_dict[name](x))
            feats[name] = x
        img = self.conv_out(x)
        return (img, feats) if return_feat else img


class VQGANv1(nn.Module):
    """Stage-1 network of VQFRv1. ``forward(x, iters)`` -> ({'dec'[, 'feat_dict']}, codebook_loss)."""

    def __init__(
        self,
        base_channels: int,
        proj_patch_size: int,
        resolution_scale_rates: Sequence[float],
        channel_multipliers: Sequence[int],
        encoder_num_blocks: int,
        decoder_num_blocks: int,
        quant_level: Sequence[str],
        quantizer_opt: dict,
        fix_keys: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.encoder = EncoderV1(
            base_channels,
            proj_patch_size,
            resolution_scale_rates,
            channel_multipliers,
            encoder_num_blocks,
            quant_level,
        )
        self.decoder = DecoderV1(
            base_channels, proj_patch_size, resolution_scale_rates, channel_multipliers, decoder_num_blocks
        )
        self.quantizer = GeneralizedQuantizer(quantizer_opt)
        self.apply(init_weights)
        freeze_matching(self, fix_keys)

    def get_last_layer(self) -> Tensor:
        return self.decoder.conv_out[-1].weight

    def forward(
        self, x: Tensor, iters: int = -1, return_keys: Sequence[str] = ("dec",)
    ) -> tuple[dict[str, Tensor], Tensor]:
        quant, loss, info = self.quantizer(self.encoder(x), iters=iters)
        res: dict = {}
        if "feat_dict" in return_keys:
            res["feat_dict"] = info
        if "dec" in return_keys:
            res["dec"] = self.decoder(quant)
        return res, loss

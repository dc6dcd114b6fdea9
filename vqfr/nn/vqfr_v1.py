"""VQFRv1: the paper's original restoration network (no fidelity knob)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqfr.nn.init import freeze_matching, init_weights
from vqfr.nn.layers import ResnetBlockV1, UpDownSample, group_norm
from vqfr.nn.precision import to_dtype_of
from vqfr.nn.quantize import GeneralizedQuantizer
from vqfr.nn.vqgan_v1 import DecoderV1, EncoderV1, level_channels
from vqfr.nn.warping import TextureWarpingModule, upsample_offset

# Per-level keys of ``align_opt``. The released option files also give each level's ``channel`` and
# ``previous_offset_channel``, which follow from the channel multipliers: accepted only when they agree.
_ALIGN_KEYS = ("cond_channels", "cond_downscale_rate", "deformable_groups")
_DERIVED_ALIGN_KEYS = ("channel", "previous_offset_channel")


def check_align_opt(align_opt: dict[str, dict], chans: dict[str, int], align_from_patch: int) -> None:
    """Refuse an ``align_opt`` the v1 main decoder would not follow: a level too many or missing, an
    unknown or missing key, or a ``channel``/``previous_offset_channel`` other than the network's."""
    levels = [f"Level_{2**s}" for s in range(int(math.log2(align_from_patch)), -1, -1)]
    if set(align_opt) != set(levels):
        raise ValueError(f"align_opt needs the levels {', '.join(levels)}, got {', '.join(align_opt) or 'none'}")
    for name in levels:
        opt = align_opt[name]
        unknown = [k for k in opt if k not in _ALIGN_KEYS + _DERIVED_ALIGN_KEYS]
        missing = [k for k in _ALIGN_KEYS if k not in opt]
        if unknown or missing:
            problem = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
            raise ValueError(f"align_opt.{name}: {problem} (keys: {', '.join(_ALIGN_KEYS + _DERIVED_ALIGN_KEYS)})")
        upper = f"Level_{2 * int(name.split('_')[1])}"
        derived = {"channel": chans[name], "previous_offset_channel": chans[upper] if name != levels[0] else 0}
        for key, value in derived.items():
            if key in opt and opt[key] != value:
                raise ValueError(f"align_opt.{name}.{key} is {opt[key]}, but the channel multipliers make it {value}")


class MainDecoderV1(nn.Module):
    """v1 main decoder: warp texture features from ``align_from_patch`` down to full resolution,
    then predict the image from the fused feature concatenated with the degraded input."""

    def __init__(
        self,
        base_channels: int,
        resolution_scale_rates: Sequence[float],
        channel_multipliers: Sequence[int],
        align_opt: dict[str, dict],
        align_from_patch: int,
    ) -> None:
        super().__init__()
        self.log_size = int(math.log2(align_from_patch))
        chans = level_channels(base_channels, align_from_patch, channel_multipliers)
        rates = list(resolution_scale_rates)[::-1]
        self.decoder_dict = nn.ModuleDict()
        self.pre_upsample_dict = nn.ModuleDict()
        for s in range(self.log_size - 1, -1, -1):
            name = f"Level_{2**s}"
            c = chans[name]
            self.decoder_dict[name] = ResnetBlockV1(2 * c, c)
            self.pre_upsample_dict[name] = UpDownSample(chans[f"Level_{2 ** (s + 1)}"], c, rates[s], "up")
        check_align_opt(align_opt, chans, align_from_patch)
        self.align_func_dict = nn.ModuleDict()
        for name, opt in align_opt.items():
            s = int(math.log2(int(name.split("_")[1])))
            self.align_func_dict[name] = TextureWarpingModule(
                channel=chans[name],
                cond_channels=opt["cond_channels"],
                cond_downscale_rate=opt["cond_downscale_rate"],
                deformable_groups=opt["deformable_groups"],
                previous_offset_channel=0 if 2**s == align_from_patch else chans[f"Level_{2 ** (s + 1)}"],
                learned_downsample=True,
            )
        c0 = chans["Level_1"]
        self.conv_out_1 = nn.Sequential(group_norm(c0), nn.SiLU())
        self.conv_out = nn.Sequential(nn.Conv2d(c0 + 3, 3, kernel_size=3, padding=1))

    def forward(self, feats: dict[str, Tensor], inpfeat: Tensor, x_lq: Tensor) -> Tensor:
        top = f"Level_{2**self.log_size}"
        x, offset = self.align_func_dict[top](feats[top], inpfeat)
        for s in range(self.log_size - 1, -1, -1):
            name = f"Level_{2**s}"
            x = self.pre_upsample_dict[name](x)
            warped, offset = self.align_func_dict[name](feats[name], inpfeat, upsample_offset(offset))
            x = self.decoder_dict[name](torch.cat([x, warped], dim=1))
        return self.conv_out(torch.cat([self.conv_out_1(x), x_lq], dim=1))


class InpFeatConv(nn.Module):
    """The input-feature conv of v1 (its weights live under ``inpfeat_extraction.conv``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class VQFRv1(nn.Module):
    """``forward(x_lq, fidelity_ratio)`` -> {'dec': texture image, 'main_dec': restored image}.

    The call is the one every restoration network takes (:class:`vqfr.nn.registry.Architecture`);
    v1 has no fidelity control, so ``fidelity_ratio`` changes nothing (its registry entry says so).
    """

    def __init__(
        self,
        base_channels: int,
        proj_patch_size: int,
        resolution_scale_rates: Sequence[float],
        channel_multipliers: Sequence[int],
        encoder_num_blocks: int,
        decoder_num_blocks: int,
        quant_level: Sequence[str],
        inpfeat_extraction_opt: dict,
        align_opt: dict[str, dict],
        align_from_patch: int,
        quantizer_opt: dict,
        fix_keys: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.inpfeat_extraction = InpFeatConv(**inpfeat_extraction_opt)
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
        self.main_decoder = MainDecoderV1(
            base_channels, resolution_scale_rates, channel_multipliers, align_opt, align_from_patch
        )
        self.quantizer = GeneralizedQuantizer(quantizer_opt)
        self.apply(init_weights)
        freeze_matching(self, fix_keys)

    def get_last_layer(self) -> Tensor:
        return self.decoder.conv_out[-1].weight

    def get_main_last_layer(self) -> Tensor:
        return self.main_decoder.conv_out[-1].weight

    def forward(
        self,
        x_lq: Tensor,
        fidelity_ratio: float | Tensor | None = None,
        iters: int = -1,
        return_keys: Sequence[str] = ("dec",),
    ) -> dict[str, Tensor]:
        """``iters`` drives the k-means codebook schedule in training; ``fidelity_ratio`` is not used."""
        # Each part runs in the dtype of its weights (see vqfr.nn.precision); all float32 in training.
        inpfeat = self.inpfeat_extraction(to_dtype_of(x_lq, self.inpfeat_extraction))
        quant, _, info = self.quantizer(self.encoder(to_dtype_of(x_lq, self.encoder)), iters=iters)
        res: dict = {}
        if "feat_dict" in return_keys:
            res["feat_dict"] = info
        if "dec" in return_keys:
            dec, feats = self.decoder({k: to_dtype_of(v, self.decoder) for k, v in quant.items()}, return_feat=True)
            res["dec"] = dec
            main = self.main_decoder
            res["main_dec"] = main(feats, to_dtype_of(inpfeat, main), to_dtype_of(x_lq, main))
        return res

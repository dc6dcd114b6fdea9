"""The parallel decoder's texture warping module and the v2 main decoder.

At every scale the warping module predicts offsets (and a mask) from the input's own features
and the texture feature, and warps the texture feature with a modulated deformable conv; the
main decoder fuses the warped textures coarse to fine.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqfr.nn.deform_conv import ModulatedDeformConv2d
from vqfr.nn.layers import FreshSiLU, NearestUpConv, ResnetBlock, UpDownSample, conv1, conv3, group_norm


class TextureWarpingModule(nn.Module):
    """Warp a texture feature toward the degraded input.

    ``forward(x_main, inpfeat, previous_offset=None) -> (warped, offset_feature)``. The input
    feature is brought to the level's size by a parameter-free bilinear resize (v2) or, with
    ``learned_downsample=True``, by the v1 ``downsample`` module (resize then conv).
    """

    def __init__(
        self,
        channel: int,
        cond_channels: int,
        cond_downscale_rate: int,
        deformable_groups: int,
        previous_offset_channel: int = 0,
        learned_downsample: bool = False,
    ) -> None:
        super().__init__()
        self.cond_downscale_rate = cond_downscale_rate
        if learned_downsample:
            self.downsample = UpDownSample(cond_channels, cond_channels, cond_downscale_rate, "down")
        else:
            self.downsample = None
        self.offset_conv1 = nn.Sequential(
            conv1(channel + cond_channels, channel),
            group_norm(channel),
            FreshSiLU(),
            nn.Conv2d(channel, channel, kernel_size=7, padding=3, groups=channel),
            group_norm(channel),
            FreshSiLU(),
            conv1(channel, channel),
        )
        self.offset_conv2 = nn.Sequential(
            conv3(channel + previous_offset_channel, channel), group_norm(channel), FreshSiLU()
        )
        self.dcn = ModulatedDeformConv2d(channel, channel, 3, padding=1, deformable_groups=deformable_groups)

    def resize_condition(self, inpfeat: Tensor) -> Tensor:
        if self.downsample is not None:
            return self.downsample(inpfeat)
        h, w = inpfeat.shape[-2:]
        size = (h // self.cond_downscale_rate, w // self.cond_downscale_rate)
        return F.interpolate(inpfeat, size=size, mode="bilinear", align_corners=False)

    def forward(self, x_main: Tensor, inpfeat: Tensor, previous_offset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        offset = self.offset_conv1(torch.cat([self.resize_condition(inpfeat), x_main], dim=1))
        if previous_offset is not None:
            offset = torch.cat([offset, previous_offset], dim=1)
        offset = self.offset_conv2(offset)
        return self.dcn(x_main, offset), offset


def upsample_offset(offset: Tensor) -> Tensor:
    """Carry an offset feature to the next finer level: bilinear x2, values doubled."""
    return F.interpolate(offset, scale_factor=2, mode="bilinear", align_corners=False).mul_(2)


class MainDecoder(nn.Module):
    """v2 main decoder: warp the texture feature of every level and fuse them coarse to fine."""

    def __init__(self, base_channels: int, channel_multipliers: Sequence[int], align_opt: dict) -> None:
        super().__init__()
        chans = [base_channels * m for m in channel_multipliers]
        self.num_levels = len(chans)
        last = self.num_levels - 1
        self.decoder_dict = nn.ModuleDict()
        self.pre_upsample_dict = nn.ModuleDict()
        self.align_func_dict = nn.ModuleDict()
        for i in reversed(range(self.num_levels)):
            name = f"Level_{2**i}"
            coarser = chans[min(i + 1, last)]
            if i < last:
                self.pre_upsample_dict[name] = NearestUpConv(coarser, chans[i])
            self.align_func_dict[name] = TextureWarpingModule(
                channel=chans[i],
                cond_channels=align_opt["cond_channels"],
                cond_downscale_rate=2**i,
                deformable_groups=align_opt["deformable_groups"],
                previous_offset_channel=0 if i == last else coarser,
            )
            if i < last:
                self.decoder_dict[name] = ResnetBlock(2 * chans[i], chans[i])

    def forward(self, feats: dict[str, Tensor], inpfeat: Tensor, fidelity_ratio: float = 1.0) -> Tensor:
        coarsest = f"Level_{2 ** (self.num_levels - 1)}"
        x, offset = self.align_func_dict[coarsest](feats[coarsest], inpfeat)
        for i in reversed(range(self.num_levels - 1)):
            name = f"Level_{2**i}"
            x = self.pre_upsample_dict[name](x)
            warped, offset = self.align_func_dict[name](feats[name], inpfeat, upsample_offset(offset))
            x = self.decoder_dict[name](torch.cat([x, warped], dim=1))
        if isinstance(fidelity_ratio, Tensor):
            return feats["Level_1"] + fidelity_ratio * x
        return torch.add(feats["Level_1"], x, alpha=fidelity_ratio)  # one pass instead of two

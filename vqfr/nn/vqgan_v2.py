"""VQGANv2: the stage-1 codebook network (encoder -> L2 quantizer -> texture decoder)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vqfr.nn.init import freeze_matching, init_weights
from vqfr.nn.layers import AttnBlock, Downsample, ResnetBlock, Upsample, conv3, norm_act_conv
from vqfr.nn.quantize import L2VectorQuantizer


def _mid_blocks(channels: int, attention: bool) -> nn.Sequential:
    if attention:
        return nn.Sequential(ResnetBlock(channels, channels), AttnBlock(channels), ResnetBlock(channels, channels))
    return nn.Sequential(ResnetBlock(channels, channels), ResnetBlock(channels, channels))


def _level_blocks(cin: int, cout: int, num_blocks: int, attention: bool) -> list[nn.Module]:
    """``num_blocks`` residual blocks (the first maps cin -> cout), each followed by attention if asked."""
    blocks: list[nn.Module] = []
    for j in range(num_blocks):
        blocks.append(ResnetBlock(cin if j == 0 else cout, cout))
        if attention:
            blocks.append(AttnBlock(cout))
    return blocks


class Encoder(nn.Module):
    """Image -> (code_dim, H/f, W/f) with f = 2^(len(channel_multipliers)-1)."""

    def __init__(
        self,
        base_channels: int,
        channel_multipliers: Sequence[int],
        num_blocks: int,
        use_attention: bool,
        code_dim: int,
    ) -> None:
        super().__init__()
        chans = [base_channels * m for m in channel_multipliers]
        last = len(chans) - 1
        self.conv_in = conv3(3, chans[0])
        self.blocks = nn.ModuleList()
        for i, c in enumerate(chans):
            prev = chans[max(i - 1, 0)]
            level: list[nn.Module] = [Downsample(prev)] if i > 0 else []
            level += _level_blocks(prev, c, num_blocks, use_attention and i == last)
            self.blocks.append(nn.Sequential(*level))
        self.mid_blocks = _mid_blocks(chans[-1], use_attention)
        self.conv_out = norm_act_conv(chans[-1], code_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for level in self.blocks:
            x = level(x)
        return self.conv_out(self.mid_blocks(x))


class Decoder(nn.Module):
    """Code map -> image; optionally also the feature of every level (``Level_{2^i}``)."""

    def __init__(
        self,
        base_channels: int,
        channel_multipliers: Sequence[int],
        num_blocks: int,
        use_attention: bool,
        code_dim: int,
    ) -> None:
        super().__init__()
        chans = [base_channels * m for m in channel_multipliers]
        last = len(chans) - 1
        self.levels = [f"Level_{2**i}" for i in reversed(range(len(chans)))]
        self.conv_in = conv3(code_dim, chans[-1])
        self.mid_blocks = _mid_blocks(chans[-1], use_attention)
        self.blocks = nn.ModuleList()
        for i in reversed(range(len(chans))):
            prev = chans[min(i + 1, last)]
            level: list[nn.Module] = [Upsample(prev)] if i < last else []
            level += _level_blocks(prev, chans[i], num_blocks, use_attention and i == last)
            self.blocks.append(nn.Sequential(*level))
        self.conv_out = norm_act_conv(chans[0], 3)

    def features(self, z: Tensor) -> dict[str, Tensor]:
        """The feature of every level, coarsest first (``Level_1`` is full resolution)."""
        x = self.mid_blocks(self.conv_in(z))
        feats = {}
        for name, level in zip(self.levels, self.blocks):
            x = level(x)
            feats[name] = x
        return feats

    def forward(self, z: Tensor, return_feat: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        feats = self.features(z)
        img = self.conv_out(feats["Level_1"])
        return (img, feats) if return_feat else img


class VQGANv2(nn.Module):
    """Stage-1 network of VQFRv2. ``forward(x)`` -> ({'quant_feat', 'quant_index', 'dec'}, codebook_loss)."""

    def __init__(
        self,
        base_channels: int,
        channel_multipliers: Sequence[int],
        num_enc_blocks: int,
        use_enc_attention: bool,
        num_dec_blocks: int,
        use_dec_attention: bool,
        code_dim: int,
        quantizer_opt: dict,
        fix_keys: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.encoder = Encoder(base_channels, channel_multipliers, num_enc_blocks, use_enc_attention, code_dim)
        self.decoder = Decoder(base_channels, channel_multipliers, num_dec_blocks, use_dec_attention, code_dim)
        self.quantizer = L2VectorQuantizer(**{k: v for k, v in quantizer_opt.items() if k != "type"})
        self.apply(init_weights)
        freeze_matching(self, fix_keys)

    def get_last_layer(self) -> Tensor:
        return self.decoder.conv_out[-1].weight

    def forward(
        self, x: Tensor, iters: int = -1, return_keys: Sequence[str] = ("dec",)
    ) -> tuple[dict[str, Tensor], Tensor]:
        quant_feat, loss, index = self.quantizer(self.encoder(x))
        res = {"quant_feat": quant_feat, "quant_index": index}
        if "dec" in return_keys:
            res["dec"] = self.decoder(quant_feat)
        return res, loss

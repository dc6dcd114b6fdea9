"""Exponential moving average of the generator's weights (what gets exported as ``params_ema``)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema = decay * ema + (1 - decay) * weights`` after every step; buffers are copied.

    With ``decay == 0`` it is an exact copy of the trained network.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        src = dict(net.named_parameters())
        for name, p in self.module.named_parameters():
            q = src[name].detach()
            if self.decay == 0.0 or not q.dtype.is_floating_point:
                p.copy_(q)
            else:
                p.lerp_(q, 1.0 - self.decay)
        src_buf = dict(net.named_buffers())
        for name, b in self.module.named_buffers():
            if name in src_buf and src_buf[name].shape == b.shape:
                b.copy_(src_buf[name])

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.module.load_state_dict(sd)

"""Vector quantizers: nearest-code lookup in a learned codebook with a straight-through gradient.

* :class:`L2VectorQuantizer` (v2): codebook only.
* :class:`L2VectorQuantizerKmeans` (v1): 1x1 convs into and out of code space, and during
  training a reservoir of recent encodings from which the codebook is re-estimated by k-means.
* :class:`GeneralizedQuantizer` (v1): one quantizer per level.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vqfr.nn.precision import full_precision

COMMITMENT_BETA = 0.25


def squared_distances(z: Tensor, codebook: Tensor) -> Tensor:
    """``|z|^2 + |e|^2 - 2 z.e`` for rows of ``z`` (n, d) against codes (k, d) -> (n, k).

    At least float32, autocast off: these distances pick codes, and the difference of two large
    squared norms loses everything to bfloat16/float16 rounding.
    """
    dtype = torch.promote_types(torch.promote_types(z.dtype, codebook.dtype), torch.float32)
    with full_precision(z):
        z, codebook = z.to(dtype), codebook.to(dtype)
        return (z**2).sum(dim=1, keepdim=True) + (codebook**2).sum(dim=1) - 2 * z @ codebook.t()


def codebook_loss(z_quant: Tensor, z: Tensor, beta: float = COMMITMENT_BETA) -> Tensor:
    """VQ-VAE loss: move the encoder towards its codes and (weighted by ``beta``) codes towards it."""
    return torch.mean((z_quant.detach() - z) ** 2) + beta * torch.mean((z_quant - z.detach()) ** 2)


def kmeans(x: Tensor, k: int, iters: int = 30, seed: int = 0) -> Tensor:
    """Lloyd's k-means with k-means++ seeding on rows of ``x`` (n, d); returns (k, d) centres."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = x.detach().float()
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [x[first]]
    closest = ((x - x[first]) ** 2).sum(dim=1)
    for _ in range(1, k):
        probs = closest.clamp_min(0).cpu()
        idx = int(torch.multinomial(probs / probs.sum(), 1, generator=gen)) if probs.sum() > 0 else 0
        centres.append(x[idx])
        closest = torch.minimum(closest, ((x - x[idx]) ** 2).sum(dim=1))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = squared_distances(x, c).argmin(dim=1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype).unsqueeze(1)
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
    return c


class L2VectorQuantizer(nn.Module):
    """v2 quantizer: ``embedding.weight`` (num_code, code_dim) is its only state."""

    def __init__(self, num_code: int, code_dim: int, spatial_size: tuple[int, int] | list[int]) -> None:
        super().__init__()
        self.num_code = num_code
        self.code_dim = code_dim
        self.spatial_size = tuple(spatial_size)
        self.beta = COMMITMENT_BETA
        self.embedding = nn.Embedding(num_code, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_code, 1.0 / num_code)

    def nearest(self, z: Tensor) -> Tensor:
        """Indices of the nearest codes for a (b, c, h, w) map, shaped (b, h*w)."""
        b = z.shape[0]
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        return squared_distances(flat, self.embedding.weight).argmin(dim=1).view(b, -1)

    def get_feature(self, indices: Tensor, spatial_size: tuple[int, int] | None = None) -> Tensor:
        """Turn (b, h*w) code indices into a (b, code_dim, h, w) map."""
        h, w = spatial_size or self.spatial_size
        return self.embedding(indices).view(indices.shape[0], h, w, self.code_dim).permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (straight-through quantized map, codebook loss, indices (b, h*w))."""
        indices = self.nearest(z)
        z_quant = self.get_feature(indices, tuple(z.shape[-2:]))
        loss = codebook_loss(z_quant, z, self.beta)
        return z + (z_quant - z).detach(), loss, indices


class L2VectorQuantizerKmeans(nn.Module):
    """v1 quantizer: ``quant_conv`` -> nearest code -> ``post_quant_conv``, with k-means re-estimation.

    Training schedule (driven by the ``iters`` argument): before ``warmup_iters`` no quantization;
    before ``reestimate_maxiters`` every encoding enters a reservoir of ``reservoir_size`` vectors
    and every ``reestimate_iters`` steps the codebook is re-initialised by k-means on it.
    """

    def __init__(
        self,
        in_dim: int,
        num_code: int,
        code_dim: int,
        reservoir_size: int,
        reestimate_iters: int,
        reestimate_maxiters: int,
        warmup_iters: int,
    ) -> None:
        super().__init__()
        self.num_code = num_code
        self.code_dim = code_dim
        self.beta = COMMITMENT_BETA
        self.reservoir_size = reservoir_size
        self.reestimate_iters = reestimate_iters
        self.reestimate_maxiters = reestimate_maxiters
        self.warmup_iters = warmup_iters
        self.quant_conv = nn.Conv2d(in_dim, code_dim, 1)
        self.post_quant_conv = nn.Conv2d(code_dim, in_dim, 1)
        self.embedding = nn.Embedding(num_code, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_code, 1.0 / num_code)
        self.register_buffer("reservoir", torch.empty(0, code_dim), persistent=False)
        self.seen = 0  # vectors offered to the reservoir since the last re-estimation
        self.generator = torch.Generator(device="cpu").manual_seed(0)

    def _reservoir_add(self, vectors: Tensor) -> None:
        """Reservoir sampling: keep a uniform sample of every vector offered so far."""
        vectors = vectors.detach()
        if self.reservoir.shape[0] < self.reservoir_size:
            room = self.reservoir_size - self.reservoir.shape[0]
            self.reservoir = torch.cat([self.reservoir.to(vectors), vectors[:room]])
            self.seen += min(room, vectors.shape[0])
            vectors = vectors[room:]
        if vectors.shape[0] == 0:
            return
        slots = (
            torch.rand(vectors.shape[0], generator=self.generator) * (self.seen + 1 + torch.arange(vectors.shape[0]))
        ).long()
        self.seen += vectors.shape[0]
        keep = slots < self.reservoir_size
        self.reservoir[slots[keep].to(self.reservoir.device)] = vectors[keep.to(vectors.device)]

    def reestimate(self) -> bool:
        """Re-initialise the codebook by k-means on the reservoir; False if it holds too few vectors."""
        if self.reservoir.shape[0] < self.num_code:
            return False
        centres = kmeans(self.reservoir, self.num_code, seed=0).to(self.embedding.weight)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(centres, src=0)  # every process keeps rank 0's codebook
        with torch.no_grad():
            self.embedding.weight.copy_(centres)
        self.reservoir = self.reservoir[:0]
        self.seen = 0
        return True

    def training_state(self) -> dict:
        """The reservoir and its sampler: not weights (not in the state dict), but needed to resume exactly."""
        return {"reservoir": self.reservoir.detach().cpu(), "seen": self.seen, "generator": self.generator.get_state()}

    def load_training_state(self, state: dict) -> None:
        self.reservoir = state["reservoir"].to(self.embedding.weight)
        self.seen = int(state["seen"])
        self.generator.set_state(state["generator"])

    def forward(self, z: Tensor, iters: int = -1) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        z_conv = self.quant_conv(z)
        flat = z_conv.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        if self.training and iters < self.reestimate_maxiters:
            gathered = flat.detach()
            if dist.is_available() and dist.is_initialized():
                parts = [torch.empty_like(gathered) for _ in range(dist.get_world_size())]
                dist.all_gather(parts, gathered.contiguous())
                gathered = torch.cat(parts)
            self._reservoir_add(gathered)
            if iters % self.reestimate_iters == 0:
                self.reestimate()
        if self.training and iters < self.warmup_iters:
            z_quant = z_conv
            loss = z_conv.new_zeros(())
        else:
            indices = squared_distances(flat, self.embedding.weight).argmin(dim=1)
            quant = self.embedding(indices).view(z_conv.shape[0], *z_conv.shape[2:], self.code_dim)
            quant = quant.permute(0, 3, 1, 2)
            loss = codebook_loss(quant, z_conv, self.beta)
            z_quant = z_conv + (quant - z_conv).detach()
        out = self.post_quant_conv(z_quant)
        return out, loss, {"z_conv": z_conv, "z_quant_before_conv": z_quant}


class GeneralizedQuantizer(nn.Module):
    """One v1 quantizer per level (``quantize_dict[level]``); the codebook losses are summed."""

    def __init__(self, quantizer_opt: dict[str, dict]) -> None:
        super().__init__()
        self.quantize_dict = nn.ModuleDict()
        for level, opt in quantizer_opt.items():
            opt = {k: v for k, v in opt.items() if k != "type"}
            self.quantize_dict[level] = L2VectorQuantizerKmeans(**opt)

    def forward(
        self, enc: dict[str, Tensor], iters: int = -1
    ) -> tuple[dict[str, Tensor], Tensor, dict[str, dict[str, Tensor]]]:
        quant, info = {}, {}
        total = 0.0
        for level, quantizer in self.quantize_dict.items():
            quant[level], loss, info[level] = quantizer(enc[level], iters=iters)
            total = total + loss
        return quant, total, info

"""Dead-code restarts for the VQGANv2 codebook (an option of short runs on small data).

With few faces and few steps an L2 codebook collapses: codes that no encoder vector picks get no
gradient and stay unused for good (the lite recipe used 14 of 256 codes at step 500). Every
``every`` steps the codes unused since the last check are moved onto encoder vectors of the
current batch, the usual remedy (e.g. Dhariwal et al., Jukebox, 2020). The usage counts are part
of the training state, so a resumed run restarts exactly the codes an uninterrupted run would.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DeadCodeRestarter:
    """Count code usage; every ``every`` steps move unused codes onto random encoder vectors."""

    def __init__(self, num_code: int, every: int, seed: int = 0) -> None:
        self.every = int(every)
        self.seed = int(seed)
        self.usage = torch.zeros(num_code, dtype=torch.long)

    def update(self, indices: Tensor) -> None:
        self.usage += torch.bincount(indices.detach().flatten().cpu(), minlength=self.usage.numel())

    @torch.no_grad()
    def restart(
        self,
        step: int,
        encode,
        images: Tensor,
        embedding: nn.Parameter,
        optimizer: torch.optim.Optimizer | None = None,
        ema_embedding: Tensor | None = None,
    ) -> int | None:
        """At multiples of ``every``: restart the unused codes and return how many; None at other steps."""
        if self.every <= 0 or step % self.every:
            return None
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        usage = self.usage.to(embedding.device)
        if distributed:
            torch.distributed.all_reduce(usage)
        dead = (usage == 0).nonzero().flatten()
        self.usage.zero_()
        if dead.numel() == 0:
            return 0
        z = encode(images)  # (b, c, h, w) encoder vectors before quantization
        vectors = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).to(embedding.dtype)
        # Own generator seeded by (seed, step): the global RNG's position differs between a resumed
        # and an uninterrupted run (the data loader draws from it when it starts).
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        pick = torch.randint(vectors.shape[0], (dead.numel(),), generator=gen).to(vectors.device)
        new = vectors[pick]
        if distributed:
            torch.distributed.broadcast(new, src=0)  # every rank restarts onto rank 0's vectors
        embedding.data[dead] = new
        if ema_embedding is not None:
            ema_embedding[dead] = new
        if optimizer is not None:  # forget the Adam moments of the moved codes
            state = optimizer.state.get(embedding, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead] = 0
        return int(dead.numel())

    def state_dict(self) -> dict:
        return {"usage": self.usage.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.usage.copy_(state["usage"])

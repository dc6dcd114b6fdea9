"""Training both stages on CPU with tiny networks at 64 px: steps, learning, exact resume, DDP, freezing."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ALIGNED_FACES

from vqfr.cli import main
from vqfr.data.images import read_rgb_float, write_png
from vqfr.errors import VQFRError
from vqfr.nn.checkpoint import build_network, load_network, load_state_dict, save_checkpoint
from vqfr.nn.configs import tiny_config
from vqfr.train.config import merge_config
from vqfr.train.perceptual import MobileNetV2
from vqfr.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Four 64 px faces (shared aligned faces, else crops of scikit-image's astronaut) and perceptual weights."""
    import cv2

    root = tmp_path_factory.mktemp("assets")
    faces = root / "faces"
    faces.mkdir()
    shared = sorted(ALIGNED_FACES.glob("*.png"))[:4] if ALIGNED_FACES.is_dir() else []
    if shared:
        imgs = [read_rgb_float(p) for p in shared]
    else:
        data = pytest.importorskip("skimage.data")
        astro = data.astronaut().astype(np.float32) / 255.0
        imgs = [astro[y : y + 256, x : x + 256] for y, x in ((0, 100), (30, 150), (60, 120), (20, 180))]
    for i, img in enumerate(imgs):
        write_png(faces / f"face{i}.png", cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA))
    torch.manual_seed(0)
    torch.save(MobileNetV2().state_dict(), root / "mnv2.pth")  # random weights: a stand-in made by the test
    return {"faces": faces, "mnv2": root / "mnv2.pth", "root": root}


def tiny_cfg(assets, stage: str, arch: str, **over) -> dict:
    """A complete tiny config; ``over`` replaces top-level blocks."""
    percep = {"type": "mobilenet_v2", "mobilenet_weights": str(assets["mnv2"]), "weight": 1.0}
    sg = {"out_size": 64, "channel_multiplier": 1, "narrow": 0.0625}
    cfg = {
        "name": f"t_{arch}",
        "stage": stage,
        "seed": 0,
        "network": {"arch": arch, "config": tiny_config(arch)},
        "data": {
            "train": {"root": str(assets["faces"]), "size": 64, "hflip": True},
            "batch_size_per_gpu": 2,
            "num_workers": 0,
        },
        # amp off: the same float32 steps on every machine (auto picks bf16 on some CPUs)
        "train": {"total_steps": 2, "optim_g": {"lr": 1e-3, "betas": [0.9, 0.96]}, "ema_decay": 0.9, "amp": "off"},
        "losses": {"r1_every": 1},
        "logging": {"print_every": 1, "image_every": 1, "checkpoint_every": 1, "keep_last": 2, "val_every": 100},
    }
    d_arch = "SWAGANDiscriminator" if arch.endswith("v1") else "StyleGAN2Discriminator"
    if stage == "codebook":
        cfg["losses"].update(pixel={"dec": 1.0}, perceptual={**percep, "outputs": ["dec"]})
        cfg["discriminators"] = [{"name": "global", "arch": d_arch, "config": sg, "target": "dec", "r1": True}]
    elif arch == "VQFRv2":
        cfg["losses"].update(
            pixel={"main_dec": 1.0},
            perceptual={**percep, "outputs": ["main_dec"]},
            codebook_weight=0,
            quant_feature_weight=1.0,
            quant_index_weight=1.0,
        )
        cfg["train"]["optim_g_main"] = {"lr": 1e-3, "betas": [0.5, 0.9]}
        cfg["data"]["train"]["degradation"] = {
            "blur_sigma": [0.5, 2],
            "downsample_range": [1, 3],
            "jpeg_range": [60, 90],
        }
        cfg["discriminators"] = [
            {"name": "global", "arch": d_arch, "config": sg, "target": "main_dec", "r1": True},
            {
                "name": "local",
                "arch": "NLayerDiscriminator",
                "config": {"ndf": 8, "n_layers": 3},
                "loss": "hinge",
                "target": "main_dec",
                "g_weight": 0.5,
                "adaptive": ["perceptual"],
            },
        ]
    else:  # VQFRv1
        cfg["losses"].update(
            pixel={"dec": 1.0, "main_dec": 0.0},
            perceptual={**percep, "outputs": ["dec", "main_dec"], "style_weight": 2000.0},
            codebook_weight=0,
            quant_feature_weight=1.0,
        )
        cfg["data"]["train"]["degradation"] = {"blur_sigma": [0.5, 2], "downsample_range": [1, 3]}
        cfg["train"]["find_unused_parameters"] = True
        local = {
            "arch": "NLayerDiscriminator",
            "config": {"ndf": 8, "n_layers": 3},
            "loss": "hinge",
            "g_weight": 0.5,
            "adaptive": ["pixel", "perceptual", "style"],
            "d_loss_scale": 0.5,
        }
        cfg["discriminators"] = [
            {"name": "global", "arch": d_arch, "config": sg, "target": "dec", "g_weight": 0.5, "r1": True},
            {"name": "local", "target": "dec", **local},
            {"name": "main_global", "arch": d_arch, "config": sg, "target": "main_dec", "g_weight": 0.5, "r1": True},
            {"name": "main_local", "target": "main_dec", **local},
        ]
    cfg.update(over)
    return cfg


def stage1_weights(assets, arch: str, released_format: bool = False) -> Path:
    """Stage-1 weights to start stage 2 from: ours (arch/config stored) or the released layout (bare ``params``)."""
    from vqfr.nn.checkpoint import build_network

    torch.manual_seed(1)
    net = build_network(arch, tiny_config(arch))
    path = assets["root"] / f"{arch}_{'released' if released_format else 'ours'}.pth"
    if released_format:
        torch.save({"params": net.state_dict()}, path)
    else:
        save_checkpoint(path, net, arch=arch, config=tiny_config(arch))
    return path


def restoration_cfg(assets, arch: str, released_format: bool = False, **over) -> dict:
    s1 = "VQGANv2" if arch == "VQFRv2" else "VQGANv1"
    cfg = tiny_cfg(assets, "restoration", arch, **over)
    cfg["stage1"] = {"arch": s1, "config": tiny_config(s1), "weights": str(stage1_weights(assets, s1, released_format))}
    return cfg


def run(cfg: dict, out: Path, **kw) -> dict:
    trainer = Trainer(
        merge_config(copy.deepcopy(cfg)), out, progress=False, **{k: v for k, v in kw.items() if k != "cb"}
    )
    return trainer.fit(kw.get("cb"))


# ---------------------------------------------------------------------------------------------- stage 1


@pytest.mark.parametrize("arch", ["VQGANv2", "VQGANv1"])
def test_stage1_steps_with_gan_r1_and_export(assets, tmp_path, arch):
    cfg = tiny_cfg(assets, "codebook", arch)
    cfg["data"]["val"] = {"gt": str(assets["faces"]), "max_images": 2}
    cfg["logging"]["val_every"] = 2
    seen = []
    summary = run(cfg, tmp_path, cb=lambda step, logs: seen.append({k: float(v) for k, v in logs.items()}))
    assert summary["step"] == 2 and len(seen) == 2
    for logs in seen:
        assert all(np.isfinite(v) for v in logs.values())
        assert {"pixel_dec", "perceptual_dec", "codebook", "g_gan_global", "d_global", "r1_global"} <= set(logs)
    log = (tmp_path / "train.log").read_text()
    assert "perceptual: mobilenet_v2" in log and "validation psnr" in log
    assert yaml.safe_load((tmp_path / "config.yml").read_text())["losses"]["perceptual"]["ran"] == "mobilenet_v2"
    assert list((tmp_path / "tb").glob("events.*"))
    net, got_arch, _ = load_network(tmp_path / "weights" / "net_g_final.pth")
    assert got_arch == arch
    ckpt = torch.load(tmp_path / "weights" / "net_g_final.pth", weights_only=True)
    assert set(ckpt) >= {"params_ema", "params", "arch", "config"}
    assert ckpt["face_size"] == 64  # the restorer runs the network at the size it was trained for
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert net(x)[0]["dec"].shape == (1, 3, 64, 64)


def test_stage1_loss_decreases(assets, tmp_path):
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    cfg["losses"]["perceptual"] = {"type": "none"}
    cfg["data"]["train"]["hflip"] = False
    cfg["train"].update(total_steps=50, optim_g={"lr": 2e-3, "betas": [0.9, 0.96]})
    cfg["logging"].update(checkpoint_every=50, image_every=50, print_every=10)
    losses = []
    run(cfg, tmp_path, cb=lambda step, logs: losses.append(float(logs["pixel_dec"])))
    assert len(losses) == 50 and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)


def _all_tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            out[prefix + str(k)] = v
        elif isinstance(v, dict):
            out.update(_all_tensors(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out.update(_all_tensors(dict(enumerate(v)), f"{prefix}{k}."))
    return out


@pytest.mark.parametrize("arch", ["VQGANv2", "VQGANv1", "VQGANv2+restart", "VQGANv2+bf16"])
def test_resume_equals_uninterrupted_run_bitwise(assets, tmp_path, arch):
    restart = arch.endswith("+restart")
    bf16 = arch.endswith("+bf16")
    arch = arch.removesuffix("+restart").removesuffix("+bf16")
    cfg = tiny_cfg(assets, "codebook", arch)
    if bf16:  # bf16 autocast (the dead-code restarts run in float32 after the step)
        cfg["train"].update(amp="bf16", restart_dead_codes_every=3)
    if restart:  # code usage counted over steps 1-3 spans the resume at step 2
        cfg["train"]["restart_dead_codes_every"] = 3
    if arch == "VQGANv1":  # resume inside the k-means phase: reservoir full, re-estimation at steps 2 and 4
        cfg["network"]["config"]["quantizer_opt"]["Level_32"].update(
            num_code=8, reservoir_size=12, reestimate_iters=2, reestimate_maxiters=100, warmup_iters=1
        )
    cfg["discriminators"][0]["start_step"] = 1  # the GAN switches on mid-run, R1 every 2 steps
    cfg["losses"]["r1_every"] = 2
    cfg["train"].update(total_steps=4, scheduler={"milestones": [3], "gamma": 0.5})
    cfg["logging"].update(checkpoint_every=2, image_every=100, print_every=100)
    run(cfg, tmp_path / "a")
    first = run(cfg, tmp_path / "b", stop_at=2)
    assert first["step"] == 2 and not (tmp_path / "b" / "weights" / "net_g_final.pth").exists()
    second = run(cfg, tmp_path / "b", resume="auto")
    assert second["steps_run"] == 2 and "resuming" in (tmp_path / "b" / "train.log").read_text()
    a = torch.load(tmp_path / "a" / "checkpoints" / "step_00000004.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "step_00000004.pt", weights_only=True)
    ta, tb = (
        _all_tensors({k: a[k] for k in ("nets", "ema", "optims")}),
        _all_tensors({k: b[k] for k in ("nets", "ema", "optims")}),
    )
    assert ta.keys() == tb.keys() and len(ta) > 100
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different[:5]
    # and training really moved the weights
    c = torch.load(tmp_path / "b" / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert not torch.equal(c["nets"]["g"]["encoder.conv_in.weight"], b["nets"]["g"]["encoder.conv_in.weight"])
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == [
        "step_00000002.pt",
        "step_00000004.pt",
    ]  # keep_last 2


@pytest.fixture
def cpu_bf16(monkeypatch):
    """``cpu_bf16(True)``: the trainer sees a CPU with native bfloat16 (AMX-BF16); ``False``: one without."""

    from vqfr.utils import device as device_utils

    def set_native(native: bool) -> None:
        monkeypatch.setattr(device_utils, "cpu_flags", lambda: {"avx512f", "amx_bf16"} if native else {"avx2"})

    return set_native


def test_amp_auto_picks_bf16_on_cpus_with_native_bf16_and_says_so(assets, tmp_path, cpu_bf16):
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    cfg["train"].update(amp="auto", total_steps=1)

    def trainer(out: str) -> Trainer:
        return Trainer(merge_config(copy.deepcopy(cfg)), tmp_path / out, device="cpu", progress=False)

    cpu_bf16(True)
    auto = trainer("a")
    assert auto.amp_dtype == auto.task.amp_dtype == torch.bfloat16
    auto.fit()
    assert "amp: bf16 (auto: a CPU with native bf16)" in (tmp_path / "a" / "train.log").read_text()
    cpu_bf16(False)
    assert trainer("b").amp_dtype is None
    cfg["train"]["amp"] = "bf16"  # explicit: runs, with a note
    emulated = trainer("c")
    assert emulated.amp_dtype == torch.bfloat16 and "emulated" in emulated._start_line()
    cfg["train"]["amp"] = "off"
    cpu_bf16(True)
    assert trainer("d").amp_dtype is None


def test_amp_auto_keeps_a_resumed_fp32_run_in_fp32(assets, tmp_path, cpu_bf16):
    """A run that started in float32 under auto (or before auto chose bf16 on CPUs) is not switched mid-run."""
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    cfg["train"].update(amp="auto", total_steps=3)

    def resumed(out: str, resume: str = "auto") -> Trainer:
        return Trainer(merge_config(copy.deepcopy(cfg)), tmp_path / out, resume=resume, progress=False)

    cpu_bf16(False)
    run(cfg, tmp_path / "a", stop_at=1)
    cpu_bf16(True)
    kept = resumed("a")
    assert kept.amp_dtype is None and kept.task.amp_dtype is None and "started in fp32" in kept._start_line()
    kept.fit()
    state = torch.load(tmp_path / "a" / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert state["amp"] == "off"
    del state["amp"]  # a checkpoint written before the field existed (auto was fp32 on every CPU)
    torch.save(state, tmp_path / "old.pt")
    assert resumed("b", str(tmp_path / "old.pt")).amp_dtype is None
    cfg["train"]["amp"] = "bf16"  # asked for: switches
    assert resumed("c", str(tmp_path / "old.pt")).amp_dtype == torch.bfloat16
    cfg["train"]["amp"] = "auto"  # a run that started in bf16 stays in bf16
    run(cfg, tmp_path / "d", stop_at=1)
    assert resumed("d").amp_dtype == torch.bfloat16


def test_dead_codes_are_restarted_onto_encoder_vectors(assets, tmp_path):
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    cfg["train"].update(total_steps=2, restart_dead_codes_every=2)
    seen = []
    run(cfg, tmp_path, cb=lambda step, logs: seen.append({k: float(v) for k, v in logs.items()}))
    assert "codes_restarted" not in seen[0]
    moved = seen[1]["codes_restarted"]
    assert 0 < moved < 64  # 2 batches of 2 faces use a few of the 64 codes; the others moved
    state = torch.load(tmp_path / "checkpoints" / "step_00000002.pt", weights_only=True)
    emb, ema = state["nets"]["g"]["quantizer.embedding.weight"], state["ema"]["quantizer.embedding.weight"]
    assert torch.equal(state["code_usage"]["usage"], torch.zeros(64, dtype=torch.long))  # counting starts over
    # moved codes sit on encoder vectors (far larger than the uniform(-1/64, 1/64) initialisation)
    assert int((emb.abs().amax(dim=1) > 1 / 64).sum()) >= moved
    assert int(((emb - ema).abs().amax(dim=1) < 1e-6).sum()) >= moved  # the EMA copy moved with them
    bad = tiny_cfg(assets, "codebook", "VQGANv1")
    bad["train"]["restart_dead_codes_every"] = 2
    with pytest.raises(VQFRError, match="restart_dead_codes_every"):
        merge_config(bad)


def test_sigterm_saves_and_resume_finishes(assets, tmp_path):
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    cfg["train"]["total_steps"] = 2
    cfg["logging"].update(checkpoint_every=100, image_every=100)

    def stop_at_one(step, logs):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    summary = run(cfg, tmp_path, cb=stop_at_one)
    assert summary["stopped_by"] == "SIGTERM" and summary["step"] == 1
    assert (tmp_path / "checkpoints" / "step_00000001.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) is before  # the trainer's handler is removed again
    done = run(cfg, tmp_path, resume=str(tmp_path))
    assert done["step"] == 2 and (tmp_path / "weights" / "net_g_final.pth").is_file()


# ---------------------------------------------------------------------------------------------- stage 2


def test_stage2_v2_trains_only_encoder_and_main_branch(assets, tmp_path):
    cfg = restoration_cfg(assets, "VQFRv2", released_format=True)
    cfg["data"]["val"] = {"gt": str(assets["faces"]), "max_images": 2, "save_images": True}
    cfg["train"]["total_steps"] = 1
    cfg["logging"]["val_every"] = 1
    seen = []
    run(cfg, tmp_path, cb=lambda step, logs: seen.append({k: float(v) for k, v in logs.items()}))
    assert {"quant_index", "quant_feature", "pixel_main_dec", "g_gan_local", "adaptive_w_local", "r1_global"} <= set(
        seen[-1]
    )
    assert all(np.isfinite(v) for logs in seen for v in logs.values())
    stage1 = load_state_dict(cfg["stage1"]["weights"])
    after = torch.load(tmp_path / "checkpoints" / "step_00000001.pt", weights_only=True)["nets"]["g"]
    frozen = [k for k in stage1 if k.startswith(("quantizer.", "decoder."))]
    assert "decoder.conv_out.2.weight" in frozen and "quantizer.embedding.weight" in frozen
    assert all(torch.equal(after[k], stage1[k]) for k in frozen)  # codebook, texture decoder, output conv
    assert not torch.equal(
        after["encoder.conv_in.weight"], stage1["encoder.conv_in.weight"]
    )  # started from stage 1, trained
    fresh = tiny_config("VQFRv2")
    net, arch, config = load_network(tmp_path / "weights" / "net_g_final.pth")
    assert arch == "VQFRv2" and config == fresh
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out["main_dec"].shape == (1, 3, 64, 64)
    assert len(list((tmp_path / "val" / "step_00000001").glob("*.png"))) == 2
    grid = read_rgb_float(tmp_path / "images" / "step_00000001.png")
    assert grid.shape == (2 * 64, 4 * 64, 3)  # two samples; LQ | texture | main | GT


def test_stage2_v2_code_phase_then_main_branch_from_zero(assets, tmp_path):
    cfg = restoration_cfg(assets, "VQFRv2", released_format=True)
    cfg["train"].update(total_steps=2, main_branch_start=1)
    cfg["network"]["zero_init_main_branch"] = True
    for d in cfg["discriminators"]:
        d["start_step"] = 1
    seen = []
    run(cfg, tmp_path, cb=lambda step, logs: seen.append(set(logs)))
    # Step 1 trains the code predictor alone: no image loss, no adversary on the frozen texture output.
    assert {"quant_index", "quant_feature", "g_total"} == seen[0]
    assert {"pixel_main_dec", "perceptual_main_dec", "g_gan_global", "g_gan_local", "d_local"} <= seen[1]
    first = torch.load(tmp_path / "checkpoints" / "step_00000001.pt", weights_only=True)["nets"]["g"]
    last = torch.load(tmp_path / "checkpoints" / "step_00000002.pt", weights_only=True)["nets"]["g"]
    zeroed = "main_branch.decoder_dict.Level_1.conv2.weight"
    assert float(first[zeroed].abs().max()) == 0.0  # zero-initialised, untouched in the code phase
    assert float(last[zeroed].abs().max()) > 0.0  # gradients reach it once the main branch trains


@pytest.mark.parametrize("arch", ["VQFRv2", "VQFRv1"])
def test_stage1_targets_are_float32_under_bf16_autocast(assets, tmp_path, arch):
    """The frozen stage-1 network labels the codes to learn: under amp its forward stays float32
    (in bfloat16, about 1 % of the VQFR-lite stage-1 codes changed), while the generator runs in bfloat16."""
    cfg = restoration_cfg(assets, arch)
    cfg["train"]["amp"] = "bf16"
    trainer = Trainer(merge_config(copy.deepcopy(cfg)), tmp_path, progress=False)
    seen: dict[str, set[torch.dtype]] = {"stage1": set(), "generator": set()}
    for key, net in (("stage1", trainer.task.g1), ("generator", trainer.task.g)):
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda mod, inp, out, key=key: seen[key].add(out.dtype))
    batch = next(iter(trainer._train_loader()))
    logs = trainer.task.train_step(batch, 1)
    assert seen["stage1"] == {torch.float32}
    assert torch.bfloat16 in seen["generator"]  # autocast is on: the speed-up is kept
    assert all(torch.isfinite(v) for v in logs.values())


def test_zero_init_main_branch_makes_main_equal_texture():
    from vqfr.train.nets import zero_init_main_branch

    torch.manual_seed(0)
    net = build_network("VQFRv2", tiny_config("VQFRv2")).eval()
    zero_init_main_branch(net)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64) * 2 - 1, fidelity_ratio=1.0)
    assert torch.allclose(out["main_dec"], out["texture_dec"], atol=1e-6)


def test_stage2_v1_runs_with_four_discriminators(assets, tmp_path):
    cfg = restoration_cfg(assets, "VQFRv1")
    cfg["train"]["total_steps"] = 1
    cfg["data"]["batch_size_per_gpu"] = 1  # the v1 network is the slowest on CPU
    seen = []
    run(cfg, tmp_path, cb=lambda step, logs: seen.append({k: float(v) for k, v in logs.items()}))
    logs = seen[0]
    assert {"style_dec", "perceptual_main_dec", "quant_feature", "g_gan_main_local", "d_main_global"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values())
    stage1 = load_state_dict(cfg["stage1"]["weights"])
    after = torch.load(tmp_path / "checkpoints" / "step_00000001.pt", weights_only=True)["nets"]["g"]
    emb = [k for k in after if "embedding" in k]
    assert emb and all(torch.equal(after[k], stage1[k]) for k in emb)


def test_stage2_needs_matching_stage1(assets, tmp_path):
    cfg = restoration_cfg(assets, "VQFRv2")
    bad = tiny_config("VQGANv2", code_dim=64)
    cfg["stage1"]["config"] = bad
    with pytest.raises(VQFRError):
        run(cfg, tmp_path)
    cfg = restoration_cfg(assets, "VQFRv2")
    cfg["stage1"]["weights"] = None
    with pytest.raises(VQFRError, match="stage1.weights"):
        run(cfg, tmp_path)


def test_the_registry_picks_each_networks_task_and_drives_the_config_check(assets, monkeypatch):
    from vqfr.nn import registry
    from vqfr.train import tasks
    from vqfr.train.tasks.base import Task

    for arch in registry.architectures():
        assert issubclass(tasks.task_class(arch.stage, arch.name), Task)
    with pytest.raises(VQFRError, match="stage codebook trains VQGANv1/VQGANv2, not VQFRv2"):
        merge_config(tiny_cfg(assets, "codebook", "VQFRv2"))
    cfg = restoration_cfg(assets, "VQFRv2")
    cfg["stage1"]["arch"] = "VQGANv1"
    with pytest.raises(VQFRError, match="VQFRv2 is trained against a VQGANv2 stage-1 network"):
        merge_config(cfg)
    cfg = restoration_cfg(assets, "VQFRv1")
    cfg["train"]["main_branch_start"] = 5
    with pytest.raises(VQFRError, match="train.main_branch_start is for VQFRv2, not VQFRv1"):
        merge_config(cfg)
    # an option is a network's when its registry entry says so
    entry = registry.architecture("VQFRv1")
    monkeypatch.setitem(registry._REGISTRY, "VQFRv1", replace(entry, train_options=("train.main_branch_start",)))
    assert merge_config(cfg)["train"]["main_branch_start"] == 5


# ---------------------------------------------------------------------------------------------- golden losses

GOLDEN = ROOT / "tests" / "data" / "train_golden.json"
GOLDEN_RUNS = ("VQGANv2", "VQGANv1", "VQFRv2", "VQFRv1")


@pytest.fixture(scope="module")
def golden_assets(tmp_path_factory) -> dict[str, Path]:
    """Synthetic faces made with integer arithmetic only (the same bytes on every machine) and perceptual weights."""
    root = tmp_path_factory.mktemp("golden")
    faces = root / "faces"
    faces.mkdir()
    rng = np.random.default_rng(1234)
    for i in range(4):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.int64)
        img = np.pad(np.repeat(np.repeat(coarse, 8, 0), 8, 1), ((2, 2), (2, 2), (0, 0)), mode="edge")
        smooth = sum(img[dy : dy + 64, dx : dx + 64] for dy in range(5) for dx in range(5)) // 25  # 5x5 box blur
        write_png(faces / f"face{i}.png", smooth.astype(np.uint8))
    torch.manual_seed(0)
    torch.save(MobileNetV2().state_dict(), root / "mnv2.pth")
    return {"faces": faces, "mnv2": root / "mnv2.pth", "root": root}


def golden_cfg(assets, arch: str) -> dict:
    """A few steps of ``arch`` that pass every switch of the recipe: GAN start steps, lazy R1, adaptive weights,
    the lr schedule, EMA, dead-code restarts, the k-means phase, the code phase and the zeroed main branch."""
    val = {"gt": str(assets["faces"]), "max_images": 2}
    if arch.startswith("VQGAN"):
        cfg = tiny_cfg(assets, "codebook", arch)
        cfg["discriminators"][0]["start_step"] = 1
        if arch == "VQGANv2":
            cfg["train"]["restart_dead_codes_every"] = 2
            cfg["losses"]["perceptual"]["input_size"] = 48
        else:  # inside the k-means phase: reservoir full, re-estimation at step 2
            cfg["network"]["config"]["quantizer_opt"]["Level_32"].update(
                num_code=8, reservoir_size=12, reestimate_iters=2, reestimate_maxiters=100, warmup_iters=1
            )
    elif arch == "VQFRv2":
        cfg = restoration_cfg(assets, arch)
        cfg["train"]["main_branch_start"] = 1
        cfg["network"]["zero_init_main_branch"] = True
        cfg["discriminators"][0]["start_step"] = 1
        cfg["discriminators"][1]["start_step"] = 2
        val["fidelity_ratio"] = 0.5
    else:  # VQFRv1, the slowest on CPU
        cfg = restoration_cfg(assets, arch)
        cfg["data"]["batch_size_per_gpu"] = 1
        for d, start in zip(cfg["discriminators"], (0, 1, 1, 0)):
            d["start_step"] = start
    steps = 2 if arch == "VQFRv1" else 3
    cfg["data"]["val"] = val
    cfg["losses"]["r1_every"] = 2
    cfg["train"].update(total_steps=steps, scheduler={"milestones": [2], "gamma": 0.5})
    cfg["logging"].update(print_every=1, image_every=100, checkpoint_every=100, val_every=steps)
    return cfg


def golden_logs(assets, arch: str, out: Path) -> dict[str, dict[str, float]]:
    """Train ``golden_cfg`` through ``vqfr train``; every scalar it logged to TensorBoard as {step: {tag: value}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out.mkdir(parents=True, exist_ok=True)
    (out / "cfg.yml").write_text(yaml.safe_dump(golden_cfg(assets, arch)))
    argv = ["train", "-c", str(out / "cfg.yml"), "--out", str(out / "run"), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    acc = EventAccumulator(str(out / "run" / "tb"))
    acc.Reload()
    logs: dict[str, dict[str, float]] = {}
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            logs.setdefault(str(event.step), {})[tag] = float(event.value)
    return logs


@pytest.mark.parametrize("arch", GOLDEN_RUNS)
def test_logged_losses_match_the_recorded_run(golden_assets, tmp_path, arch):
    """Every scalar of a tiny ``vqfr train`` run matches the run recorded before the trainer was split by task.

    Float32 reduction order differs between machines and thread counts: 1 vs 2 threads moved the recorded
    values by up to 8.5e-4 absolute (a discriminator score) or 2.2 % relative (the 5e-4 codebook term) and
    PSNR by 3.6e-3 dB; the tolerance is a few times that, far below what a changed loss term or weight does.
    """
    golden = json.loads(GOLDEN.read_text())["runs"][arch]
    got = golden_logs(golden_assets, arch, tmp_path)
    assert list(got) == list(golden)
    for step, tags in golden.items():
        assert sorted(got[step]) == sorted(tags), step
        for tag, want in tags.items():
            assert got[step][tag] == pytest.approx(want, rel=1e-2, abs=2e-3), (step, tag, got[step][tag], want)


# ---------------------------------------------------------------------------------------------- DDP and CLI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_gloo(assets, tmp_path):
    cfg = tiny_cfg(assets, "codebook", "VQGANv2")
    cfg["logging"].update(checkpoint_every=2, image_every=100)
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "vqfr.train", "-c", str(tmp_path / "cfg.yml"),
        "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "2 process(es) on cpu" in log and "step 2 " in log
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # each rank has its own RNG


def test_cli_train_and_config_errors(assets, tmp_path, capsys):
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    cfg["train"]["total_steps"] = 1
    (tmp_path / "ok.yml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(tmp_path / "ok.yml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "weights" / "net_g_final.pth").is_file()
    bad = dict(cfg, optimiser={"lr": 1})
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(bad))
    for argv in (
        ["train", "-c", str(tmp_path / "bad.yml")],
        ["train", "-c", str(tmp_path / "missing.yml")],
        ["train", "-c", str(tmp_path / "ok.yml"), "-o", "stage=nonsense"],
        ["train", "-c", str(tmp_path / "ok.yml"), "--resume", str(tmp_path / "nope.pt")],
        ["train", "-c", str(tmp_path / "ok.yml"), "-o", f"data.train.root={tmp_path / 'void'}"],
    ):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("vqfr train: error:") and "\n" not in err, err


def test_overrides_reach_nested_keys_and_list_items():
    from vqfr.train.config import apply_override

    cfg = {"discriminators": [{"name": "a", "start_step": 5}], "train": {}}
    apply_override(cfg, "discriminators.0.start_step=0")
    apply_override(cfg, "train.optim_g.betas=[0.5, 0.9]")
    assert cfg["discriminators"][0]["start_step"] == 0 and cfg["train"]["optim_g"]["betas"] == [0.5, 0.9]
    with pytest.raises(VQFRError, match="no list item"):
        apply_override(cfg, "discriminators.3.start_step=0")
    with pytest.raises(VQFRError):
        merge_config({"stage": "codebook", "discriminators": {"0": {"start_step": 1}}})


def test_amp_off_as_documented_in_yaml_and_overrides(tmp_path):
    """YAML 1.1 reads a bare ``off`` as false: ``amp: off`` and ``-o train.amp=off`` still mean off."""
    from vqfr.train.config import load_config

    text = (ROOT / "configs" / "tiny_vqgan_v2.yml").read_text()
    assert load_config(ROOT / "configs" / "tiny_vqgan_v2.yml", ["train.amp=off"])["train"]["amp"] == "off"
    assert load_config(ROOT / "configs" / "tiny_vqgan_v2.yml", ["train.amp=bf16"])["train"]["amp"] == "bf16"
    (tmp_path / "off.yml").write_text(text.replace("train:\n", "train:\n  amp: off\n", 1))
    assert load_config(tmp_path / "off.yml")["train"]["amp"] == "off"
    with pytest.raises(VQFRError, match="train.amp must be"):
        load_config(ROOT / "configs" / "tiny_vqgan_v2.yml", ["train.amp=on"])


def test_published_configs_match_the_recipe():
    from vqfr.nn.configs import published_config
    from vqfr.train.config import load_config

    v2 = load_config(ROOT / "configs" / "vqfr_v2_ffhq512.yml")
    assert v2["network"]["config"] == published_config("VQFRv2")
    assert v2["stage1"]["config"] == published_config("VQGANv2")
    assert v2["train"]["total_steps"] == 200000
    assert v2["train"]["optim_g"]["lr"] == 1e-4 and v2["train"]["optim_g_main"]["betas"] == [0.5, 0.9]
    assert v2["data"]["train"]["degradation"]["downsample_range"] == [1, 30]
    local = next(d for d in v2["discriminators"] if d["name"] == "local")
    assert local["config"]["n_layers"] == 4 and local["g_weight"] == 0.5 and local["start_step"] == 5000
    s1 = load_config(ROOT / "configs" / "vqgan_v2_ffhq512.yml")
    assert s1["network"]["config"] == published_config("VQGANv2")
    assert s1["train"]["scheduler"] == {"milestones": [500000, 650000], "gamma": 0.5}
    assert s1["discriminators"][0]["start_step"] == 50000 and s1["losses"]["r1_every"] == 16
    v1 = load_config(ROOT / "configs" / "vqgan_v1_ffhq512.yml")
    assert v1["network"]["config"] == published_config("VQGANv1")
    f1 = load_config(ROOT / "configs" / "vqfr_v1_ffhq512.yml")
    assert f1["network"]["config"] == published_config("VQFRv1")
    assert len(f1["discriminators"]) == 4 and f1["losses"]["perceptual"]["style_weight"] == 2000.0


def _train_error(capsys, argv: list[str], after_log: bool = False) -> str:
    """The one error line of a failed ``vqfr train`` (``after_log``: the last line, after the run's own log)."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    if after_log:
        err = err.splitlines()[-1]
    assert err.startswith("vqfr train: error:") and "\n" not in err, err
    return err


def test_cli_rejects_bad_out_device_stop_at_and_optimizer_values(assets, tmp_path, capsys, monkeypatch):
    import vqfr.train.trainer as trainer_mod

    def no_build(cfg):
        raise AssertionError("networks built before the arguments were checked")

    monkeypatch.setattr(trainer_mod, "build_generator", no_build)
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    (tmp_path / "ok.yml").write_text(yaml.safe_dump(cfg))
    base = ["train", "-c", str(tmp_path / "ok.yml"), "--no-progress"]
    (tmp_path / "taken").write_text("x")
    assert "not a folder" in _train_error(capsys, [*base, "--out", str(tmp_path / "taken")])
    assert "not a folder" in _train_error(capsys, [*base, "--out", str(tmp_path / "taken" / "run")])
    for stop in ("-3", "0"):
        assert "--stop-at" in _train_error(capsys, [*base, "--out", str(tmp_path / "r"), "--stop-at", stop])
    assert not (tmp_path / "r").exists()
    if not torch.cuda.is_available():
        err = _train_error(capsys, [*base, "--out", str(tmp_path / "r"), "--device", "cuda"])
        assert "no CUDA GPU" in err and "--device cpu" in err
    assert "--device" in _train_error(capsys, [*base, "--out", str(tmp_path / "r"), "--device", "tpu"])
    for override, key in (
        ("train.optim_g.lr=abc", "train.optim_g.lr"),
        ("train.optim_g.betas=[0.9, abc]", "train.optim_g.betas"),
        ("train.optim_g.betas=0.9", "train.optim_g.betas"),
        ("train.optim_g.weight_decay=abc", "train.optim_g.weight_decay"),
        ("train.optim_d.lr=-1", "train.optim_d.lr"),
        ("train.optim_g_main={lr: abc}", "train.optim_g_main.lr"),
        ("train.ema_decay=abc", "train.ema_decay"),
        ("data.batch_size_per_gpu=two", "data.batch_size_per_gpu"),
        ("losses.r1_every=abc", "losses.r1_every"),
    ):
        assert key in _train_error(capsys, [*base, "-o", override]), override
    assert "train.total_steps must be an integer" in _train_error(capsys, [*base, "-o", "train.total_steps=abc"])
    assert "train.total_steps must be > 0" in _train_error(capsys, [*base, "-o", "train.total_steps=0"])
    # YAML 1.1 reads 1e-4 as a string; it is still a learning rate
    from vqfr.train.config import load_config

    assert load_config(tmp_path / "ok.yml", ["train.optim_g.lr=1e-4"])["train"]["optim_g"]["lr"] == 1e-4


def test_bad_training_image_is_one_line_naming_the_file(assets, tmp_path, capsys):
    import shutil

    faces = tmp_path / "faces"
    shutil.copytree(assets["faces"], faces)
    (faces / "face9.png").write_bytes(b"")  # a 0-byte file, e.g. an interrupted copy
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    cfg["data"]["train"]["root"] = str(faces)
    cfg["data"]["batch_size_per_gpu"] = 4
    cfg["train"]["total_steps"] = 2
    for workers in (1, 0):  # in a loader worker the error arrives wrapped in the worker's traceback
        cfg["data"]["num_workers"] = workers
        (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
        argv = ["train", "-c", str(tmp_path / "cfg.yml"), "--out", str(tmp_path / f"run{workers}"), "--no-progress"]
        capsys.readouterr()
        assert main(argv) == 2
        full = capsys.readouterr().err
        assert "Traceback" not in full, full
        err = full.strip().splitlines()[-1]  # after the "starting step 0" log line
        assert err.startswith("vqfr train: error: training data: cannot decode image"), err
        assert "face9.png" in err and "empty" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("network=[1, 2]", "config network must be a mapping, got [1, 2]"),
        ("train=5", "config train must be a mapping, got 5"),
        ("data=null", "config data must be a mapping, got None"),
        ("losses=[1]", "config losses must be a mapping, got [1]"),
        ("logging=abc", "config logging must be a mapping, got 'abc'"),
        ("data.val=abc", "config data.val must be a mapping or null, got 'abc'"),
        ("data.train.root=123", "config data.train.root must be a path, got 123"),
        ("data.train=5", "config data.train must be a mapping, got 5"),
        ("data.train.hflip=maybe", "config data.train.hflip must be true or false, got 'maybe'"),
        ("network.config.quantizer_opt=abc", "config network.config.quantizer_opt must be a mapping, got 'abc'"),
        ("network.config.base_channels=-4", "config network.config.base_channels must be a positive integer, got -4"),
        ("network.config.channel_multipliers=[1, 0]", "network.config.channel_multipliers[1] must be a positive"),
        ("losses.pixel.dec=abc", "config losses.pixel.dec must be a number, got 'abc'"),
        ("discriminators=[{name: g, r1: yes please}]", "config discriminators[0].r1 must be true or false"),
        ("name=[x]", "config name must be a string or null, got ['x']"),
    ],
)
def test_wrong_types_in_the_config_name_the_key(assets, tmp_path, capsys, monkeypatch, override, expected):
    import vqfr.train.trainer as trainer_mod

    def no_build(cfg):
        raise AssertionError("networks built from a config with a wrong type")

    monkeypatch.setattr(trainer_mod, "build_generator", no_build)
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    (tmp_path / "ok.yml").write_text(yaml.safe_dump(cfg))
    argv = ["train", "-c", str(tmp_path / "ok.yml"), "--no-progress", "--out", str(tmp_path / "r"), "-o", override]
    assert expected in _train_error(capsys, argv)
    assert not (tmp_path / "r").exists()


def test_image_given_as_config_is_one_line(tmp_path, capsys):
    (tmp_path / "some.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)))
    err = _train_error(capsys, ["train", "-c", str(tmp_path / "some.jpg")])
    assert "some.jpg is not a readable YAML text file" in err


def test_stage1_config_types_checked_too(assets):
    cfg = restoration_cfg(assets, "VQFRv2")
    cfg["stage1"]["config"]["quantizer_opt"]["spatial_size"] = "2x2"
    with pytest.raises(VQFRError, match="config stage1.config.quantizer_opt.spatial_size must be a non-empty list"):
        merge_config(cfg)


def test_unwritable_out_is_refused_before_building(assets, tmp_path, capsys, monkeypatch):
    import vqfr.train.trainer as trainer_mod
    import vqfr.utils.paths as paths_mod

    monkeypatch.setattr(trainer_mod, "build_generator", lambda cfg: pytest.fail("built before checking --out"))
    real_access = os.access
    monkeypatch.setattr(paths_mod.os, "access", lambda p, mode: p != tmp_path and real_access(p, mode))
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    (tmp_path / "ok.yml").write_text(yaml.safe_dump(cfg))
    err = _train_error(capsys, ["train", "-c", str(tmp_path / "ok.yml"), "--out", str(tmp_path / "run")])
    assert err == f"vqfr train: error: output folder {tmp_path / 'run'}: {tmp_path} is not writable"


def test_disk_full_while_saving_is_one_line_and_leaves_no_partial_file(assets, tmp_path, capsys, monkeypatch):
    import vqfr.nn.safe_load as safe_load_mod

    real_save = torch.save

    def disk_full(obj, f):  # torch's zip writer reports a short write like this
        real_save({"part": torch.zeros(100)}, f)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 8448 vs 8342")

    monkeypatch.setattr(safe_load_mod.torch, "save", disk_full)
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    (tmp_path / "ok.yml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    argv = ["train", "-c", str(tmp_path / "ok.yml"), "--out", str(out), "--no-progress"]
    err = _train_error(capsys, argv, after_log=True)
    step_file = out / "checkpoints" / "step_00000001.pt"
    assert err.endswith(f"cannot write {step_file}: the write failed part-way (is the disk full?)")
    assert list((out / "checkpoints").iterdir()) == []  # no step file, no temporary file


def test_other_failed_writes_during_training_are_one_line(assets, tmp_path, capsys, monkeypatch):
    import errno

    import vqfr.data.images as images_mod

    def full(path, img):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images_mod, "write_png", full)  # the image grid written every image_every steps
    cfg = tiny_cfg(assets, "codebook", "VQGANv2", discriminators=[])
    (tmp_path / "ok.yml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    argv = ["train", "-c", str(tmp_path / "ok.yml"), "--out", str(out), "--no-progress"]
    err = _train_error(capsys, argv, after_log=True)
    assert err == f"vqfr train: error: step 1: cannot write {out}: No space left on device"

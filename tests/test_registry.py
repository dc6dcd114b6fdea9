"""The architecture registry: one entry per network, read by checkpoint loading, the runtime and training."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqfr.errors import VQFRError
from vqfr.nn import registry
from vqfr.nn.checkpoint import build_network
from vqfr.nn.registry import Architecture, architecture, architectures, infer_arch, register_architecture
from vqfr.nn.vqfr_v2 import VQFRv2

LAYOUT = json.loads((Path(__file__).parent / "data" / "official_checkpoint_shapes.json").read_text())


@pytest.mark.parametrize("arch", sorted(LAYOUT))
def test_released_key_layouts_are_recognised(arch):
    assert infer_arch(LAYOUT[arch]["shapes"]) == arch


def test_unrecognised_or_ambiguous_keys_name_no_network():
    assert infer_arch(["conv_first.weight", "body.0.rdb1.conv1.weight"]) is None  # Real-ESRGAN
    assert infer_arch([]) is None


def test_a_v2_checkpoint_without_code_predictor_selects_the_nearest_code():
    keys = [k for k in LAYOUT["VQFRv2"]["shapes"] if not k.startswith("feat2index.")]
    assert architecture("VQFRv2").config_from_keys(keys)["code_selection_mode"] == "Nearest"
    assert architecture("VQFRv2").config_from_keys(LAYOUT["VQFRv2"]["shapes"])["code_selection_mode"] == "Predict"


def test_every_restoration_network_names_a_registered_codebook_partner():
    for arch in architectures("restoration"):
        assert architecture(arch.stage1).stage == "codebook"
        assert arch.reduced_parts  # the runtime casts these; an empty tuple would silently run all in fp32


@pytest.mark.parametrize("arch", ["VQFRv1", "VQFRv2"])
def test_restoration_networks_share_one_call_and_their_entry_says_whether_fidelity_acts(arch):
    torch.manual_seed(0)
    net = build_network(arch, architecture(arch).tiny_config()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():  # every branch contributes, as in a trained network
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        low, high = (net(x, fidelity_ratio=r)["main_dec"] for r in (0.2, 0.8))
    assert low.shape == (1, 3, 64, 64)
    assert bool((low - high).abs().max() > 1e-4) == architecture(arch).has_fidelity


def test_registration_is_checked(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    v2 = architecture("VQFRv2")
    with pytest.raises(VQFRError, match="already registered"):
        register_architecture(v2)
    with pytest.raises(VQFRError, match="stage1 must name a registered codebook network"):
        register_architecture(dataclasses.replace(v2, name="X", stage1="VQFRv1"))
    with pytest.raises(VQFRError, match="stage must be one of codebook, restoration"):
        register_architecture(dataclasses.replace(v2, name="X", stage="denoise"))
    with pytest.raises(VQFRError, match="unknown architecture 'VQFRv9'; choose one of VQGANv1, VQGANv2, VQFRv1"):
        architecture("VQFRv9")


def test_registry_and_configs_import_without_torch():
    code = "import sys, vqfr.nn.registry, vqfr.nn.configs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------- a new version is one entry
class VQFRv3(VQFRv2):
    """An imaginary next version, for the test: VQFRv2 plus a learned output gain (a new name and a new key)."""

    def __init__(self, out_gain: float = 1.0, **config) -> None:
        super().__init__(**config)
        self.out_gain = torch.nn.Parameter(torch.tensor(float(out_gain)))

    def forward(self, x_lq: torch.Tensor, fidelity_ratio: float | torch.Tensor = 1.0) -> dict[str, torch.Tensor]:
        res = super().forward(x_lq, fidelity_ratio=fidelity_ratio)
        res["main_dec"] = res["main_dec"] * self.out_gain
        return res


@pytest.fixture
def vqfr_v3(monkeypatch) -> Architecture:
    """VQFRv3 registered as one entry (its module is this test file), for this test only."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    v2 = architecture("VQFRv2")
    return register_architecture(
        dataclasses.replace(
            v2,
            name="VQFRv3",
            network=VQFRv3,
            published={**v2.published, "out_gain": 1.0},
            shrink=lambda cfg, *sizes: {**registry.shrink_v2(cfg, *sizes), "out_gain": 0.9},
            keys=(*v2.keys, "out_gain"),
            face_size=64,  # the checkpoint below stores none: the runtime must take it from here
        )
    )


def _tiny_v3_checkpoint(arch: Architecture, path: Path, stored: bool = True) -> Path:
    from vqfr.nn.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = build_network(arch.name, arch.tiny_config())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():  # every branch contributes, as in a trained network
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    if stored:
        save_checkpoint(path, net, arch=arch.name, config=arch.tiny_config())
    else:  # the released layout: weights only, the network is recognised from its keys
        torch.save({"params_ema": net.state_dict()}, path)
    return path


def test_a_registered_vqfr_v3_loads_and_restores_through_the_public_paths(vqfr_v3, tmp_path, capsys):
    import numpy as np

    from vqfr.cli import main
    from vqfr.io import read_image, write_image
    from vqfr.nn.checkpoint import load_network
    from vqfr.restore import FaceRestorer

    ckpt = _tiny_v3_checkpoint(vqfr_v3, tmp_path / "v3.pth")
    net, arch, config = load_network(ckpt)
    assert type(net) is VQFRv3 and arch == "VQFRv3" and config["out_gain"] == 0.9
    bare = _tiny_v3_checkpoint(vqfr_v3, tmp_path / "v3_bare.pth", stored=False)
    assert load_network(bare, config=vqfr_v3.tiny_config())[1] == "VQFRv3"  # recognised from its keys
    with pytest.raises(VQFRError, match="holds VQFRv3 weights, not VQFRv2"):
        load_network(ckpt, arch="VQFRv2")

    face = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    restorer = FaceRestorer(model=str(ckpt), device="cpu", precision="fp32")
    assert (restorer.arch, restorer.face_size, restorer.has_fidelity) == ("VQFRv3", 64, True)
    low, high = (restorer.restore(face, aligned=True, fidelity=f, upscale=1).image for f in (0.0, 1.0))
    assert low.shape == (512, 512, 3) and np.abs(low.astype(int) - high).max() > 0  # fidelity acts

    write_image(tmp_path / "in" / "face.png", face)
    out = tmp_path / "out"
    argv = ["restore", "-i", str(tmp_path / "in"), "-o", str(out), "--model", str(ckpt), "--aligned", "-s", "1"]
    assert main([*argv, "--device", "cpu", "-q"]) == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    assert report["model"]["arch"] == "VQFRv3" and report["model"]["face_size"] == 64
    assert read_image(out / "restored_imgs" / "face.png").pixels.shape == (512, 512, 3)


def test_a_registered_vqfr_v3_trains_through_the_public_path(vqfr_v3, tmp_path):
    """Training reads the same entry: the config check (stage, stage-1 partner, options), the task
    (VQFRv3 inherits VQFRv2's), initialisation from stage 1, parameter groups; two real steps run,
    the code-only phase and then the main branch, and the exported weights load as VQFRv3."""
    import numpy as np

    from vqfr.io import write_image
    from vqfr.nn.checkpoint import load_network, save_checkpoint
    from vqfr.train.config import merge_config
    from vqfr.train.trainer import Trainer

    s1 = architecture(vqfr_v3.stage1)
    torch.manual_seed(2)
    save_checkpoint(tmp_path / "s1.pth", build_network(s1.name, s1.tiny_config()), s1.name, s1.tiny_config())
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "faces" / f"f{i}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    user = {
        "stage": "restoration",
        "network": {"arch": "VQFRv3", "config": vqfr_v3.tiny_config(), "zero_init_main_branch": True},
        "stage1": {"arch": s1.name, "config": s1.tiny_config(), "weights": str(tmp_path / "s1.pth")},
        "data": {"train": {"root": str(tmp_path / "faces"), "size": 64, "degradation": {}}, "num_workers": 0},
        "train": {"total_steps": 2, "main_branch_start": 1, "optim_g_main": {"lr": 1e-4}},
        "losses": {"pixel": {"main_dec": 1.0}, "perceptual": None, "quant_feature_weight": 1, "quant_index_weight": 1},
        "logging": {"tensorboard": False},
    }
    trainer = Trainer(merge_config(user), tmp_path / "run", progress=False)
    assert type(trainer.task).__name__ == "VQFRv2Task" and type(trainer.task.g).__name__ == "VQFRv3"
    summary = trainer.fit()
    assert summary["step"] == 2
    net, arch, _ = load_network(tmp_path / "run" / "weights" / "net_g_final.pth")
    assert arch == "VQFRv3" and type(net) is VQFRv3
    wrong = {**user, "stage1": {**user["stage1"], "arch": "VQGANv1", "config": architecture("VQGANv1").tiny_config()}}
    with pytest.raises(VQFRError, match="VQFRv3 is trained against a VQGANv2 stage-1 network"):
        merge_config(wrong)

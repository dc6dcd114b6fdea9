"""The architecture registry: one entry per network, read by checkpoint loading, the runtime and training."""

from __future__ import annotations

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
        register_architecture(Architecture(**{**v2.__dict__, "name": "X", "stage1": "VQFRv1"}))
    with pytest.raises(VQFRError, match="stage must be one of codebook, restoration"):
        register_architecture(Architecture(**{**v2.__dict__, "name": "X", "stage": "denoise"}))
    with pytest.raises(VQFRError, match="unknown architecture 'VQFRv9'; choose one of VQGANv1, VQGANv2, VQFRv1"):
        architecture("VQFRv9")


def test_registry_and_configs_import_without_torch():
    code = "import sys, vqfr.nn.registry, vqfr.nn.configs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

"""Checkpoint round trips in the released format and one-line errors for every bad file."""

import pytest
import torch

from vqfr.errors import VQFRError
from vqfr.nn.checkpoint import (
    build_network,
    load_network,
    load_state_dict,
    load_weights,
    save_checkpoint,
)
from vqfr.nn.configs import tiny_config


@pytest.fixture(scope="module")
def tiny_v2():
    torch.manual_seed(0)
    return build_network("VQFRv2", tiny_config("VQFRv2")).eval()


def _x():
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_round_trip_restores_identical_outputs(tmp_path, tiny_v2):
    path = tmp_path / "net.pth"
    save_checkpoint(path, tiny_v2, arch="VQFRv2", config=tiny_config("VQFRv2"), extra={"step": 7})
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"params_ema", "arch", "config", "step"}
    net, arch, cfg = load_network(path)
    assert arch == "VQFRv2" and cfg == tiny_config("VQFRv2")
    assert not any(t.is_meta for t in list(net.parameters()) + list(net.buffers()))
    with torch.inference_mode():
        assert torch.equal(net(_x())["main_dec"], tiny_v2(_x())["main_dec"])
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


@pytest.mark.parametrize("layout", ["params_ema", "params", "bare", "both", "ddp"])
def test_released_layouts_load(tmp_path, tiny_v2, layout):
    sd = tiny_v2.state_dict()
    obj = {
        "params_ema": {"params_ema": sd},
        "params": {"params": sd},
        "bare": sd,
        "both": {"params": {k: torch.zeros_like(v) for k, v in sd.items()}, "params_ema": sd},
        "ddp": {"params": {"module." + k: v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    loaded = load_state_dict(path)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)  # params_ema preferred over params
    net = load_weights(build_network("VQFRv2", tiny_config("VQFRv2")), path)
    assert torch.equal(net.state_dict()["quantizer.embedding.weight"], sd["quantizer.embedding.weight"])
    # Arch inferred from the keys when the file does not say (released files); config given here.
    net2, arch, _ = load_network(path, config=tiny_config("VQFRv2"))
    assert arch == "VQFRv2"


def _message(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(VQFRError) as e:
        load_state_dict(tmp_path / "nope.pth")
    assert "not found" in _message(e)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("hello, I am not weights")
    with pytest.raises(VQFRError) as e:
        load_state_dict(p)
    assert "not a PyTorch checkpoint" in _message(e)


def test_truncated_checkpoint(tmp_path, tiny_v2):
    p = tmp_path / "full.pth"
    save_checkpoint(p, tiny_v2)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(VQFRError) as e:
        load_state_dict(cut)
    assert "truncated or corrupt" in _message(e)


class Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_code_in_checkpoint_is_refused(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "payload": Evil()}, p)
    with pytest.raises(VQFRError) as e:
        load_state_dict(p)
    assert "could run code" in _message(e)


def test_wrong_architecture_names_keys_and_shapes(tmp_path, tiny_v2):
    p = tmp_path / "v2.pth"
    save_checkpoint(p, tiny_v2)
    with pytest.raises(VQFRError) as e:
        load_weights(build_network("VQGANv2", tiny_config("VQGANv2")), p)
    msg = _message(e)
    assert "unexpected key(s), first feat2index." in msg and "VQGANv2" in msg
    other = tiny_config("VQFRv2", num_code=32)
    with pytest.raises(VQFRError) as e:
        load_weights(build_network("VQFRv2", other), p)
    msg = _message(e)
    assert "3 shape mismatch(es), first feat2index.1.weight: checkpoint [64, 32] vs VQFRv2 [32, 32]" in msg
    sd = {k: v for k, v in tiny_v2.state_dict().items() if not k.startswith("feat2index")}
    torch.save({"params_ema": sd}, p)
    with pytest.raises(VQFRError) as e:
        load_weights(build_network("VQFRv2", tiny_config("VQFRv2")), p)
    assert "missing key(s), first feat2index." in _message(e)


def test_unrecognised_weights(tmp_path):
    p = tmp_path / "x.pth"
    torch.save({"params": {"foo.weight": torch.zeros(2)}}, p)
    with pytest.raises(VQFRError) as e:
        load_network(p)
    assert "cannot tell which network" in _message(e)

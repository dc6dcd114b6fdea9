"""Checkpoint round trips in the released format and one-line errors for every bad file."""

from pathlib import Path

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


# ------------------------------------------------------------------ issue 8: messages and API errors


@pytest.mark.parametrize("text", ["not a checkpoint\n", '{"a": 1}\n', "# weights\n", "1234\n"])
def test_text_file_is_not_called_unsafe(tmp_path, text):
    p = tmp_path / "notes.pth"
    p.write_text(text)
    with pytest.raises(VQFRError) as e:
        load_state_dict(p)
    msg = _message(e)
    assert msg == f"{p} is not a PyTorch checkpoint"


def test_plain_pickle_gets_our_line_and_no_torch_warning(tmp_path):
    import pickle
    import warnings

    p = tmp_path / "p4.pth"
    p.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(VQFRError) as e:
        warnings.simplefilter("always")
        load_state_dict(p)
    assert [str(w.message) for w in caught] == []
    assert "plain Python pickle, not a PyTorch checkpoint" in _message(e)


def test_every_weight_file_is_read_through_the_one_safe_loader():
    """Checkpoints, training states, metric, loss and detector weights and runtime metadata all go through
    vqfr.nn.safe_load, so a foreign, damaged or unsafe file gets the same one-line explanation everywhere."""
    package = Path(__file__).resolve().parents[1] / "vqfr"
    callers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "torch.load(" in p.read_text())
    assert callers == ["nn/safe_load.py"]


def test_unsafe_file_never_passes_on_torch_advice(tmp_path):
    from vqfr.metrics.weights import LPIPS_VGG16, load_state_dict_file

    p = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "payload": Evil()}, p)
    for load in (load_state_dict, lambda path: load_state_dict_file(path, LPIPS_VGG16)):
        with pytest.raises(VQFRError) as e:
            load(p)
        msg = _message(e)
        assert "could run code" in msg and "weights_only" not in msg and "Re-running" not in msg


def test_bad_face_size_in_checkpoint_is_one_line(tmp_path, tiny_v2):
    p = tmp_path / "v2.pth"
    save_checkpoint(p, tiny_v2, arch="VQFRv2", config=tiny_config("VQFRv2"), extra={"face_size": "abc"})
    with pytest.raises(VQFRError) as e:
        load_network(p)
    assert "face_size must be a positive multiple of 32, got 'abc'" in _message(e)
    from vqfr.restore import FaceRestorer

    with pytest.raises(VQFRError, match="face_size"):
        FaceRestorer(p, device="cpu", download=False)


@pytest.mark.parametrize("with_arch", [True, False])
def test_weights_of_the_other_version_are_named(tmp_path, tiny_v2, with_arch):
    p = tmp_path / "v2.pth"
    save_checkpoint(p, tiny_v2, arch="VQFRv2" if with_arch else None)
    with pytest.raises(VQFRError) as e:
        load_network(p, arch="VQFRv1")
    assert _message(e) == f"{p} holds VQFRv2 weights, not VQFRv1"
    from vqfr.restore import FaceRestorer

    with pytest.raises(VQFRError, match="holds VQFRv2 weights, not VQFRv1"):
        FaceRestorer("VQFR_v1", weights=p, device="cpu", download=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_network_on_missing_cuda_is_one_line(tmp_path, tiny_v2):
    p = tmp_path / "v2.pth"
    save_checkpoint(p, tiny_v2, arch="VQFRv2", config=tiny_config("VQFRv2"))
    with pytest.raises(VQFRError) as e:
        load_network(p, device="cuda")
    assert "CUDA" in _message(e)


def test_save_checkpoint_to_a_folder_is_one_line(tmp_path, tiny_v2):
    with pytest.raises(VQFRError) as e:
        save_checkpoint(tmp_path, tiny_v2)
    assert "is a folder" in _message(e)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_nothing_and_says_so(tmp_path, tiny_v2, monkeypatch):
    real_save = torch.save

    def disk_full(obj, f):  # what torch's zip writer raises when the disk fills up mid-write
        real_save({"part": torch.zeros(100)}, f)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 8448 vs 8342")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(VQFRError) as e:
        save_checkpoint(tmp_path / "net.pth", tiny_v2)
    assert _message(e) == f"cannot write {tmp_path / 'net.pth'}: the write failed part-way (is the disk full?)"
    assert list(tmp_path.iterdir()) == []


def test_non_strict_load_of_unrelated_weights_is_an_error(tmp_path, tiny_v2):
    p = tmp_path / "other.pth"
    torch.save({"params": {"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(3)}}, p)
    net = build_network("VQFRv2", tiny_config("VQFRv2"))
    with pytest.raises(VQFRError) as e:
        load_weights(net, p, strict=False)
    assert "none of its 2 tensors fits VQFRv2 (nothing was loaded)" in _message(e)
    save_checkpoint(p, tiny_v2)  # partly fitting weights still load non-strictly
    other = tiny_config("VQFRv2", num_code=32)
    load_weights(build_network("VQFRv2", other), p, strict=False)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"base_channels": -4}, "VQFRv2 config.base_channels must be a positive integer, got -4"),
        ({"quantizer_opt": "abc"}, "VQFRv2 config.quantizer_opt must be a mapping, got 'abc'"),
        ({"channel_multipliers": [1, "x"]}, "VQFRv2 config.channel_multipliers[1] must be an integer, got 'x'"),
        ({"use_enc_attention": "maybe"}, "VQFRv2 config.use_enc_attention must be true or false, got 'maybe'"),
        ({"align_opt": {"cond_channels": 0}}, "VQFRv2 config.align_opt.cond_channels must be a positive integer"),
    ],
)
def test_network_config_types_checked_before_building(change, expected):
    config = {**tiny_config("VQFRv2"), **change}
    with pytest.raises(VQFRError) as e:
        build_network("VQFRv2", config)
    assert expected in _message(e)

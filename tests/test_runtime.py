"""FaceRuntime: same pixels as the plain network, precision choices, codes kept in fp32, ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.io import read_image, write_image
from vqfr.nn.checkpoint import load_network
from vqfr.restore import FaceRestorer, FaceRuntime, runtime
from vqfr.restore.runtime import check_fidelity, export_onnx, resolve_precision
from vqfr.utils import device as device_utils
from vqfr.utils.image_tensor import tensor_to_uint8

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def _faces(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB crops (a face-like mix of gradients and texture, not pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        base = np.stack([np.sin(3 * xx + rng.uniform(0, 6)), np.cos(4 * yy + rng.uniform(0, 6)), xx * yy], axis=2)
        img = 0.5 + 0.35 * base + rng.normal(0, 0.05, (size, size, 3))
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return out


def _to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def v2(tiny_checkpoints) -> Path:
    return tiny_checkpoints["VQFRv2"]


@pytest.fixture(scope="module")
def onnx_v2(v2, tmp_path_factory) -> Path:
    net, arch, _ = load_network(v2)
    return export_onnx(net, arch, tmp_path_factory.mktemp("onnx") / "tiny_v2.onnx", face_size=64)


# ---------------------------------------------------------------- same pixels as before
@pytest.mark.parametrize("fidelity", [0.0, 0.5, 1.0])
def test_fp32_runtime_gives_the_plain_network_output(v2, fidelity):
    rt = FaceRuntime(str(v2), device="cpu", precision="fp32", batch_size=1)
    crops = _faces(2)
    net, _, _ = load_network(v2)
    with torch.inference_mode():
        want = [tensor_to_uint8(net(_to_tensor([c]), fidelity_ratio=fidelity)["main_dec"])[0] for c in crops]
    got = rt.restore_crops(crops, fidelity)
    for g, w in zip(got, want):
        # Same network, same float32 inputs; but with 2 threads oneDNN may pick another reduction order
        # than with 1 (seen on this machine: a few pixels one grey level apart at a rounding boundary).
        diff = np.abs(g.astype(np.int16) - w.astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_face_restorer_delegates_to_its_runtime(v2):
    rt = FaceRuntime(str(v2), device="cpu", precision="fp32")
    restorer = FaceRestorer(runtime=rt, upscale=1, fidelity=0.3)
    crops = [np.ascontiguousarray(np.kron(c, np.ones((8, 8, 1), np.uint8))) for c in _faces(2)]  # 512 px crops
    got = restorer.restore_crops(crops)
    want = rt.restore_crops(crops, 0.3)
    assert all(g.shape == (512, 512, 3) for g in got)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert (restorer.arch, restorer.face_size, restorer.precision, restorer.backend) == ("VQFRv2", 64, "fp32", "torch")
    assert restorer.net is rt.net


def test_batches_agree_with_single_faces(v2):
    crops = _faces(5)
    one = FaceRuntime(str(v2), device="cpu", precision="fp32", batch_size=1).restore_crops(crops)
    three = FaceRuntime(str(v2), device="cpu", precision="fp32", batch_size=3).restore_crops(crops)
    for a, b in zip(one, three):  # a batch may take other conv kernels: at most a rounding step apart
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_default_batch_size_is_one_on_the_cpu(v2):
    assert FaceRuntime(str(v2), device="cpu", precision="fp32").batch_size == 1
    assert runtime.default_batch_size("cuda") == 4


def test_v1_runs_and_ignores_fidelity(tiny_checkpoints):
    rt = FaceRuntime(str(tiny_checkpoints["VQFRv1"]), device="cpu", precision="fp32")
    crops = _faces(1)
    a, b = rt.restore_crops(crops, 0.0)[0], rt.restore_crops(crops, 1.0)[0]
    assert rt.arch == "VQFRv1" and not rt.has_fidelity
    np.testing.assert_array_equal(a, b)
    half = FaceRuntime(str(tiny_checkpoints["VQFRv1"]), device="cpu", precision="bf16").restore_crops(crops)[0]
    assert _psnr(half, a) > 34  # v1's decoders in bf16 too (measured about 40 dB)


# ---------------------------------------------------------------- precision choices
@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags the runtime sees: ``flags({"amx_bf16"})``."""

    def set_flags(values: set[str]) -> None:
        monkeypatch.setattr(device_utils, "cpu_flags", lambda: set(values))

    return set_flags


@pytest.mark.parametrize(
    "cpu, want",
    [({"avx512f", "amx_bf16", "amx_tile"}, "bf16"), ({"avx512f", "avx512_bf16"}, "bf16"), ({"bf16"}, "bf16"),
     ({"avx2", "avx512f"}, "fp32"), (set(), "fp32")],
)  # fmt: skip
def test_auto_precision_on_the_cpu_follows_native_bf16(flags, cpu, want):
    flags(cpu)
    assert resolve_precision("auto", torch.device("cpu")) == (want, [])


def test_auto_precision_on_cuda_prefers_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda"))[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", torch.device("cuda"))[0] == "fp16"
    assert resolve_precision("fp16", torch.device("cuda"))[0] == "fp16"
    assert resolve_precision("auto", torch.device("mps"))[0] == "fp32"


def test_explicit_precisions_on_the_cpu(flags):
    flags(set())
    assert resolve_precision("fp32", torch.device("cpu")) == ("fp32", [])
    name, notes = resolve_precision("bf16", torch.device("cpu"))
    assert name == "bf16" and "emulated" in notes[0]
    with pytest.raises(VQFRError, match="fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(VQFRError, match="unknown precision 'half'"):
        resolve_precision("half", torch.device("cpu"))


def test_cpu_flags_reads_this_machine():
    assert isinstance(device_utils.cpu_flags(), set)  # whatever the machine, a set (empty off Linux)


def test_half_is_a_deprecated_alias(v2):
    with pytest.warns(DeprecationWarning, match="precision='fp16'"):
        restorer = FaceRestorer(model=str(v2), device="cpu", half=True)
    assert any("--half ignored" in n for n in restorer.notes) and not restorer.half


# ---------------------------------------------------------------- reduced precision keeps the codes
def _codes(net, x, fidelity=0.5):
    with torch.inference_mode():
        out = net(x, fidelity_ratio=fidelity)
    return out["quant_logit"], out["main_dec"].float()


def test_bf16_runtime_chooses_exactly_the_fp32_codes(v2):
    x = _to_tensor(_faces(3))
    full = FaceRuntime(str(v2), device="cpu", precision="fp32", batch_size=3)
    half = FaceRuntime(str(v2), device="cpu", precision="bf16", batch_size=3)
    assert half.net.decoder.conv_in.weight.dtype == torch.bfloat16  # the decoders really run in bf16
    assert half.net.encoder.conv_in.weight.dtype == torch.float32
    logits32, out32 = _codes(full.net, x)
    logits16, out16 = _codes(half.net, x)
    assert logits16.dtype == torch.float32
    torch.testing.assert_close(logits16, logits32, rtol=0, atol=0)  # float32 encoder and head: same bits
    # only the decoding is rounded: 40-44 dB measured over seeds and fidelities, vs ~18 dB when codes change
    a, b = tensor_to_uint8(out16), tensor_to_uint8(out32)
    assert _psnr(a, b) > 36


def test_codes_are_chosen_in_fp32_under_autocast():
    from vqfr.nn.configs import tiny_config
    from vqfr.nn.quantize import squared_distances
    from vqfr.nn.vqfr_v2 import VQFRv2

    torch.manual_seed(0)
    net = VQFRv2(**tiny_config("VQFRv2")).eval()
    with torch.no_grad():  # logits x30: clear top-1 margins, so a rounded logit would show as a changed value
        net.feat2index[1].weight.mul_(30)
    enc = torch.randn(2, 32, 2, 2)
    with torch.inference_mode():
        _, plain = net.select_codes(enc)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, cast = net.select_codes(enc)
            dist = squared_distances(torch.randn(5, 32), torch.randn(7, 32))
    assert cast.dtype == torch.float32 and dist.dtype == torch.float32
    torch.testing.assert_close(cast, plain, rtol=0, atol=0)


# ---------------------------------------------------------------- ONNX
def test_onnx_export_matches_pytorch_with_dynamic_batch(v2, onnx_v2):
    ort_rt = FaceRuntime(str(onnx_v2), backend="onnxruntime", batch_size=3)
    torch_rt = FaceRuntime(str(v2), device="cpu", precision="fp32")
    assert (ort_rt.arch, ort_rt.face_size, ort_rt.precision) == ("VQFRv2", 64, "fp32")
    for batch in (1, 3):
        x = _to_tensor(_faces(batch, seed=batch))
        for fidelity in (0.0, 0.5, 1.0):
            got, want = ort_rt.forward(x, fidelity), torch_rt.forward(x, fidelity)
            assert got.shape == want.shape == (batch, 3, 64, 64)
            assert (got - want).abs().max() < 1e-4  # measured 1e-5 at most


def test_onnx_export_of_v1_has_no_fidelity_input(tiny_checkpoints, tmp_path):
    path = tiny_checkpoints["VQFRv1"]
    net, arch, _ = load_network(path)
    onnx_path = export_onnx(net, arch, tmp_path / "v1.onnx", face_size=64)
    rt = FaceRuntime(str(onnx_path), backend="onnxruntime")
    assert rt.arch == "VQFRv1" and not rt.has_fidelity
    x = _to_tensor(_faces(2))
    want = FaceRuntime(str(path), device="cpu", precision="fp32").forward(x, 0.5)
    assert (rt.forward(x, 0.5) - want).abs().max() < 1e-4


def test_onnxruntime_backend_exports_a_checkpoint_once(v2, tmp_path, monkeypatch):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path / "home"))
    first = FaceRuntime(str(v2), backend="onnxruntime", progress=False)
    cached = list((tmp_path / "home" / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and first.weights_path == cached[0]
    stamp = cached[0].stat().st_mtime_ns
    second = FaceRuntime(str(v2), backend="onnxruntime", progress=False)
    assert second.weights_path == cached[0] and cached[0].stat().st_mtime_ns == stamp


def test_cli_export_then_restore_with_onnxruntime(v2, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", "--format", "onnx", str(v2), str(out), "-q"]) == 0
    assert out.is_file()
    inp = tmp_path / "in"
    inp.mkdir()
    face = np.ascontiguousarray(np.kron(_faces(1)[0], np.ones((8, 8, 1), np.uint8)))
    write_image(inp / "face.png", face)
    args = ["restore", "-i", str(inp), "--aligned", "-s", "1", "-q"]
    assert main([*args, "-o", str(tmp_path / "ort"), "--backend", "onnxruntime", "--model", str(out)]) == 0
    assert main([*args, "-o", str(tmp_path / "pt"), "--model", str(v2), "--precision", "fp32"]) == 0
    report = json.loads((tmp_path / "ort" / "results.json").read_text())
    assert report["settings"]["backend"] == "onnxruntime" and report["settings"]["precision"] == "fp32"
    assert report["summary"]["restored"] == 1
    a = read_image(tmp_path / "ort" / "restored_imgs" / "face.png").pixels.astype(int)
    b = read_image(tmp_path / "pt" / "restored_imgs" / "face.png").pixels.astype(int)
    assert np.abs(a - b).max() <= 1


# ---------------------------------------------------------------- bad options: one line each
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--precision", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
        (["--backend", "onnxruntime", "--precision", "bf16"], "runs in fp32 only"),
        (["--batch-size", "0"], "batch size must be a whole number of at least 1"),
        (["--model", "missing.onnx", "--backend", "onnxruntime"], "ONNX file not found"),
        (["--model", "TMP/model.onnx"], "is an ONNX file: run it with --backend onnxruntime"),
        (["--model", "TMP/bad.onnx", "--backend", "onnxruntime"], "is not a usable ONNX model"),
    ],
)
def test_cli_bad_runtime_options_are_one_line_errors(v2, tmp_path, capsys, extra, message):
    inp = tmp_path / "in"
    inp.mkdir()
    write_image(inp / "face.png", _faces(1)[0])
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    extra = [str(tmp_path / e[4:]) if e.startswith("TMP/") else e for e in extra]
    if "--model" not in extra:
        extra += ["--model", str(v2)]
    rc = main(["restore", "-i", str(inp), "-o", str(tmp_path / "out"), "--aligned", "-q", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["OUT.txt"], "must end in .onnx"),
        (["OUT.onnx", "--opset", "13"], "from opset 16 on"),
        (["OUT.onnx", "--face-size", "50"], "multiple of 32"),
    ],
)
def test_cli_export_bad_options_are_one_line_errors(v2, tmp_path, capsys, args, message):
    args = [str(tmp_path / a) if a.startswith("OUT") else a for a in args]
    rc = main(["export", str(v2), *args, "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*"))


def test_export_refuses_a_stage1_network(tmp_path, capsys, tiny_checkpoint):
    ckpt = tiny_checkpoint(tmp_path / "vqgan.pth", "VQGANv2")
    assert main(["export", str(ckpt), str(tmp_path / "x.onnx"), "-q"]) == 2
    assert "not a VQFR restoration network" in capsys.readouterr().err


def test_fidelity_checks():
    assert check_fidelity(0.25) == 0.25
    with pytest.raises(VQFRError, match="fidelity must be in"):
        check_fidelity(1.5)


def test_cpu_runtime_runs_channels_last_with_the_same_output(v2, monkeypatch):
    # prepare_for_inference: channels-last weights on a CPU (so activations stay channels last);
    # the output is the plain network's, to float rounding. The library leaves the caller's malloc
    # alone; the commands (their own processes) ask glibc to keep freed memory.
    import argparse

    from vqfr.cli.options import restorer_kwargs

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda enabled=True: calls.append(enabled) or True)
    rt = FaceRuntime(str(v2), device="cpu", precision="fp32")
    assert calls == []
    names = ("model", "weights", "device", "backend", "fidelity", "batch_size", "min_eye_distance", "detector", "quiet")
    restorer_kwargs(argparse.Namespace(**dict.fromkeys(names), no_download=True), "fp32")
    assert calls == [True]
    conv = rt.net.main_branch.align_func_dict["Level_1"].dcn.conv_offset
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    net, _, _ = load_network(v2)
    x = _to_tensor(_faces(1))
    with torch.inference_mode():
        want = net(x, fidelity_ratio=0.5)["main_dec"]
    got = rt.forward(x, 0.5)
    assert got.is_contiguous() and (got - want).abs().max() < 1e-4


def test_keep_freed_memory_is_a_no_op_off_glibc(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    assert runtime.keep_freed_memory() is False

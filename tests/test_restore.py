"""End-to-end restoration with a tiny random VQFR written by the test: API, CLI, model zoo."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.face import FaceDetector
from vqfr.io import read_image, write_image
from vqfr.restore import FaceRestorer, zoo
from vqfr.restore.batch import collect_inputs, output_stems
from vqfr.restore.zoo import ZooModel, download_file, resolve_weights

REAL_LQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_lq"
needs_data = pytest.mark.skipif(not REAL_LQ.is_dir(), reason=f"shared test photos not found at {REAL_LQ}")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def cached_detection():
    """Detect each distinct image once per module: detection is the slow part on a CPU."""
    cache: dict[str, list] = {}
    original = FaceDetector.detect

    def detect(self, image):
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
        if key not in cache:
            cache[key] = original(self, image)
        return copy.deepcopy(cache[key])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FaceDetector, "detect", detect)
        yield


def _tiny_checkpoint(path: Path, arch: str) -> Path:
    import torch

    from vqfr.nn.checkpoint import build_network, save_checkpoint
    from vqfr.nn.configs import tiny_config

    torch.manual_seed(0)
    config = tiny_config(arch)
    save_checkpoint(path, build_network(arch, config), arch=arch, config=config, extra={"face_size": 64})
    return path


@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_v2.pth", "VQFRv2")


@pytest.fixture(scope="module")
def restorer(tiny_v2) -> FaceRestorer:
    return FaceRestorer(model=str(tiny_v2), device="cpu", upscale=2)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """A small RGB photo with exactly one face (the right half of Blake_Lively.jpg, halved)."""
    if not REAL_LQ.is_dir():
        pytest.skip(f"shared test photos not found at {REAL_LQ}")
    image = read_image(REAL_LQ / "whole" / "Blake_Lively.jpg").pixels[:, 350:]
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _no_face(h: int = 90, w: int = 120) -> np.ndarray:
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    return np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8).copy()


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


# ---------------------------------------------------------------- Python API
@needs_data
def test_restore_array_returns_image_and_faces(restorer, portrait):
    result = restorer.restore(portrait)
    h, w = portrait.shape[:2]
    assert result.image.shape == (2 * h, 2 * w, 3) and result.image.dtype == np.uint8
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.cropped.shape == face.restored.shape == (512, 512, 3)
    assert face.restored.dtype == np.uint8
    assert not np.array_equal(face.cropped, face.restored)  # the network really ran
    assert set(result.timings) >= {"detect", "restore", "paste", "total"}
    d = face.to_dict()
    assert len(d["box"]) == 4 and len(d["landmarks"]) == 5 and isinstance(d["score"], float)
    # away from the face the output is the Lanczos-resized input, untouched
    background = cv2.resize(portrait, (2 * w, 2 * h), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(result.image[-10:], background[-10:])
    assert not np.array_equal(result.image, background)


@needs_data
@pytest.mark.parametrize("upscale", [1, 1.5, 3, 4])
def test_output_size_follows_upscale(restorer, portrait, upscale):
    result = restorer.restore(portrait, upscale=upscale)
    h, w = portrait.shape[:2]
    assert result.image.shape[:2] == (round(h * upscale), round(w * upscale))
    assert len(result.faces) == 1


@needs_data
def test_gray_input_gives_gray_output(restorer, portrait):
    gray = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    result = restorer.restore(gray)
    assert result.image.shape == (gray.shape[0] * 2, gray.shape[1] * 2) and result.image.dtype == np.uint8
    assert len(result.faces) == 1


@needs_data
def test_rgba_alpha_is_kept_and_resized(restorer, portrait):
    h, w = portrait.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    result = restorer.restore(np.dstack([portrait, alpha]))
    assert result.image.shape == (2 * h, 2 * w, 4)
    expected = cv2.resize(alpha, (2 * w, 2 * h), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(result.image[..., 3], expected)
    assert len(result.faces) == 1


@needs_data
def test_16bit_input_stays_16bit(restorer, portrait):
    deep = portrait.astype(np.uint16) * 257 + 100
    result = restorer.restore(deep, upscale=1)
    assert result.image.dtype == np.uint16 and result.image.shape == deep.shape
    np.testing.assert_array_equal(result.image[-5:], deep[-5:])  # background keeps all 16 bits
    assert len(result.faces) == 1


@needs_data
def test_exif_rotated_jpeg_is_restored_upright(restorer, portrait, tmp_path):
    # store the upright portrait rotated 90 degrees, tagged "rotate 90 CW to display" (orientation 6)
    stored = np.rot90(portrait, k=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, quality=95, exif=exif)
    result = restorer.restore(path, upscale=1)
    assert result.image.shape[:2] == portrait.shape[:2]
    assert len(result.faces) == 1


@needs_data
def test_aligned_face_and_only_center_face(restorer):
    result = restorer.restore(REAL_LQ / "aligned" / "Adele_crop.png", aligned=True, upscale=1)
    assert result.image.shape == (512, 512, 3)
    np.testing.assert_array_equal(result.image, result.faces[0].restored)
    whole = restorer.restore(REAL_LQ / "whole" / "10045.png", upscale=1, only_center_face=True)
    assert len(whole.faces) == 1
    assert [s["reason"] for s in whole.skipped] == ["not the centre face"] * 2  # 3 people found


@needs_data
def test_tiny_faces_are_skipped_and_reported(tiny_v2, portrait):
    fussy = FaceRestorer(model=str(tiny_v2), device="cpu", upscale=1, min_eye_distance=500)
    result = fussy.restore(portrait)
    assert result.faces == [] and len(result.skipped) == 1
    assert "too small" in result.skipped[0]["reason"]
    np.testing.assert_array_equal(result.image, portrait)


def test_no_face_image_is_resized_and_noted(restorer):
    image = _no_face()
    result = restorer.restore(image, upscale=2)
    assert result.faces == [] and result.image.shape == (180, 240, 3)
    assert any("no face" in note for note in result.notes)


def test_background_upsampler_hook(tiny_v2):
    calls = []

    def upsampler(rgb, scale):
        calls.append((rgb.shape, scale))
        return np.full((int(rgb.shape[0] * scale), int(rgb.shape[1] * scale), 3), 77, np.uint8)

    r = FaceRestorer(model=str(tiny_v2), device="cpu", upscale=3, bg_upsampler=upsampler)
    result = r.restore(_no_face())
    assert calls == [((90, 120, 3), 3.0)]
    assert (result.image == 77).all()


def test_oversized_input_and_output_are_refused(tiny_v2, tmp_path):
    r = FaceRestorer(model=str(tiny_v2), device="cpu", upscale=2, max_pixels=20_000)
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 150)).save(big)
    with pytest.raises(VQFRError, match="megapixels"):
        r.restore(big)
    with pytest.raises(VQFRError, match="--upscale 2"):
        r.restore(_no_face(90, 120))  # 10800 px in, 43200 px out


def test_bad_arguments_are_one_line_errors(restorer, tiny_v2):
    with pytest.raises(VQFRError, match="fidelity"):
        restorer.restore(_no_face(), fidelity=1.5)
    with pytest.raises(VQFRError, match="upscale"):
        restorer.restore(_no_face(), upscale=0)
    with pytest.raises(VQFRError, match="uint8"):
        restorer.restore(np.zeros((8, 8, 3), np.int64))
    with pytest.raises(VQFRError, match="batch size"):
        FaceRestorer(model=str(tiny_v2), batch_size=0)
    with pytest.raises(VQFRError, match="image array is empty"):
        restorer.restore(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(VQFRError, match="eye distance must be >= 0"):
        FaceRestorer(model=str(tiny_v2), min_eye_distance=-1)


@needs_data
def test_vqfr_v1_checkpoint_notes_that_fidelity_is_ignored(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "tiny_v1.pth", "VQFRv1")
    r = FaceRestorer(model=str(ckpt), device="cpu", fidelity=0.2)
    result = r.restore(REAL_LQ / "aligned" / "Paris_Hilton_crop.png", aligned=True, upscale=0.5)
    assert r.arch == "VQFRv1" and result.image.shape == (256, 256, 3)
    assert any("fidelity is ignored" in note for note in result.notes)


def test_package_exports_face_restorer():
    import vqfr

    assert vqfr.FaceRestorer is FaceRestorer


# ---------------------------------------------------------------- model zoo
def test_zoo_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    cached = tmp_path / "home" / "VQFR_v2.pth"
    cached.write_bytes(b"weights")
    assert resolve_weights("VQFR_v2").path == cached
    assert resolve_weights("v2").model.name == "VQFR_v2"
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"x")
    assert resolve_weights("VQFR_v2", weights=explicit).path == explicit  # --weights wins
    with pytest.raises(VQFRError, match="weights file not found"):
        resolve_weights("VQFR_v2", weights=tmp_path / "nope.pth")
    with pytest.raises(VQFRError, match="unknown model 'VQFR_v9'.*VQFR_v2, VQFR_v1"):
        resolve_weights("VQFR_v9")


def test_zoo_checks_the_published_sum(tmp_path, monkeypatch):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path))
    (tmp_path / "VQFR_v1-33a1fac5.pth").write_bytes(b"not the released file")
    with pytest.raises(VQFRError, match="SHA-256.*download it again"):
        resolve_weights("VQFR_v1")


def test_offline_error_names_the_exact_path(tmp_path, monkeypatch):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path / "cache"))
    expected = str(tmp_path / "cache" / "VQFR_v2.pth")
    with pytest.raises(VQFRError) as info:
        resolve_weights("VQFR_v2", download=False)
    assert expected in str(info.value) and zoo.ZOO["VQFR_v2"].url in str(info.value)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(zoo.urllib.request, "urlopen", no_network)
    with pytest.raises(VQFRError, match="download failed: no route to host") as info:
        resolve_weights("VQFR_v2", progress=False)
    assert expected in str(info.value)
    assert not any((tmp_path / "cache").iterdir())  # no partial file left behind


def test_download_verifies_checksum_before_moving_into_place(tmp_path):
    payload = b"pretend weights" * 1000
    source = tmp_path / "remote.pth"
    source.write_bytes(payload)
    good = ZooModel("X", "VQFRv2", "x.pth", source.as_uri(), sha256=hashlib.sha256(payload).hexdigest())
    target = tmp_path / "home" / "x.pth"
    download_file(good.url, target, good, progress=False)
    assert target.read_bytes() == payload
    bad = ZooModel("X", "VQFRv2", "y.pth", source.as_uri(), sha256="0" * 64)
    with pytest.raises(VQFRError, match="SHA-256"):
        download_file(bad.url, tmp_path / "home" / "y.pth", bad, progress=False)
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["x.pth"]


# ---------------------------------------------------------------- CLI
@needs_data
def test_cli_batch_with_bad_files_goes_on_and_reports(tiny_v2, portrait, tmp_path, capsys):
    inp = tmp_path / "photos"
    inp.mkdir()
    write_image(inp / "good.png", portrait)
    write_image(inp / "empty.png", _no_face())
    buf = io.BytesIO()
    Image.fromarray(portrait).save(buf, "JPEG")
    (inp / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (inp / "notes.png").write_text("this is not an image")
    Image.new("RGB", (400, 300)).save(inp / "huge.png")
    before = _snapshot(inp)
    out = tmp_path / "out"
    rc = main(
        [
            "restore",
            "-i",
            str(inp),
            "-o",
            str(out),
            "--model",
            str(tiny_v2),
            "-s",
            "1",
            "--max-pixels",
            "100000",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "5 input(s): 1 restored (1 faces), 1 without faces, 3 failed" in err
    assert _snapshot(inp) == before  # inputs untouched, nothing written into the input folder
    report = json.loads((out / "results.json").read_text())
    status = {Path(e["input"]).name: e for e in report["inputs"]}
    assert {k: v["status"] for k, v in status.items()} == {
        "cut.jpg": "error",
        "empty.png": "no_face",
        "good.png": "ok",
        "huge.png": "error",
        "notes.png": "error",
    }
    assert "truncated" in status["cut.jpg"]["error"] and "megapixels" in status["huge.png"]["error"]
    assert "not an image" in status["notes.png"]["error"]
    assert report["summary"]["failed"] == 3 and report["summary"]["faces"] == 1
    # the face-less image is copied through
    np.testing.assert_array_equal(read_image(out / "restored_imgs" / "empty.png").pixels, _no_face())
    good = status["good.png"]
    assert good["output_size"] == [portrait.shape[1], portrait.shape[0]]
    assert set(good["timings"]) >= {"read", "detect", "restore", "paste", "write"}
    face = good["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and "score" in face
    assert read_image(face["cmp"]).pixels.shape == (512, 1024, 3)
    assert read_image(face["restored"]).pixels.shape == (512, 512, 3)


@needs_data
def test_cli_finds_three_faces_in_10045(tiny_v2, tmp_path):
    out = tmp_path / "out"
    rc = main(
        [
            "restore",
            "-i",
            str(REAL_LQ / "whole" / "10045.png"),
            "-o",
            str(out),
            "--model",
            str(tiny_v2),
            "-s",
            "1",
            "--ext",
            "jpg",
            "--suffix",
            "v",
            "-q",
        ]
    )
    assert rc == 0
    entry = json.loads((out / "results.json").read_text())["inputs"][0]
    assert len(entry["faces"]) == 3
    assert entry["output"].endswith("restored_imgs/10045_v.jpg")
    assert read_image(entry["output"]).size == (783, 1146)
    names = sorted(p.name for p in (out / "restored_faces").iterdir())
    assert names == ["10045_00_v.png", "10045_01_v.png", "10045_02_v.png"]
    assert len(list((out / "cropped_faces").iterdir())) == len(list((out / "cmp").iterdir())) == 3


@needs_data
def test_cli_aligned_glob_and_gray_rgba_16bit_outputs(tiny_v2, portrait, tmp_path):
    rc = main(
        [
            "restore",
            "-i",
            str(REAL_LQ / "aligned" / "Ad*.png"),
            "-o",
            str(tmp_path / "a"),
            "--model",
            str(tiny_v2),
            "--aligned",
            "-s",
            "0.5",
            "-q",
        ]
    )
    assert rc == 0
    assert read_image(tmp_path / "a" / "restored_imgs" / "Adele_crop.png").size == (256, 256)

    inp = tmp_path / "odd"
    inp.mkdir()
    write_image(inp / "gray.png", cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY))
    h, w = portrait.shape[:2]
    write_image(inp / "alpha.png", np.dstack([portrait, np.full((h, w), 128, np.uint8)]))
    write_image(inp / "deep.png", portrait.astype(np.uint16) * 257)
    out = tmp_path / "b"
    assert main(["restore", "-i", str(inp), "-o", str(out), "--model", str(tiny_v2), "-s", "2", "-q"]) == 0
    gray = read_image(out / "restored_imgs" / "gray.png")
    assert gray.is_gray and gray.size == (2 * w, 2 * h)
    rgba = read_image(out / "restored_imgs" / "alpha.png")
    assert rgba.alpha is not None and rgba.size == (2 * w, 2 * h)
    assert (rgba.alpha == 128).all()
    deep = read_image(out / "restored_imgs" / "deep.png")
    assert deep.bit_depth == 16 and deep.size == (2 * w, 2 * h)


def test_cli_refuses_output_inside_input_folder(tiny_v2, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    write_image(inp / "x.png", _no_face())
    rc = main(["restore", "-i", str(inp), "-o", str(inp / "results"), "--model", str(tiny_v2)])
    assert rc == 2
    assert "inside the input folder" in capsys.readouterr().err
    rc = main(["restore", "-i", str(inp / "x.png"), "-o", str(inp), "--model", str(tiny_v2)])
    assert rc == 2 and "is the folder of the input" in capsys.readouterr().err
    assert sorted(p.name for p in inp.iterdir()) == ["x.png"]
    # an existing file where the output folder should be: refused before the model loads
    blocker = tmp_path / "taken.png"
    blocker.write_bytes(b"not a folder")
    for out in (blocker, blocker / "sub"):
        rc = main(["restore", "-i", str(inp / "x.png"), "-o", str(out), "--model", str(tmp_path / "missing.pth")])
        err = capsys.readouterr().err
        assert rc == 2 and f"{blocker} is a file" in err and len(err.strip().splitlines()) == 1
    assert blocker.read_bytes() == b"not a folder"


def test_collect_inputs_recursive_glob_and_name_clashes(tmp_path):
    for rel in ["a.jpg", "a.png", "sub/b.png", "sub/deeper/c.webp", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    flat = collect_inputs(tmp_path)
    assert [p.name for p in flat.files] == ["a.jpg", "a.png"]
    deep = collect_inputs(tmp_path, recursive=True)
    assert sorted(output_stems(deep).values()) == ["a_jpg", "a_png", "sub/b", "sub/deeper/c"]
    globbed = collect_inputs(str(tmp_path / "sub" / "*.png"))
    assert [p.name for p in globbed.files] == ["b.png"] and output_stems(globbed) == {globbed.files[0]: "b"}
    with pytest.raises(VQFRError, match="--recursive"):
        collect_inputs(_empty(tmp_path))
    with pytest.raises(VQFRError, match="no files match"):
        collect_inputs(str(tmp_path / "*.gif"))


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_cli_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path / "home"))
    write_image(tmp_path / "x.png", _no_face())
    rc = main(["restore", "-i", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--no-download"])
    err = capsys.readouterr().err
    assert rc == 2 and str(tmp_path / "home" / "VQFR_v2.pth") in err
    assert len(err.strip().splitlines()) == 1

"""End-to-end restoration with a tiny random VQFR written by the test: API, CLI, model zoo."""

from __future__ import annotations

import copy
import errno
import hashlib
import io
import json
import os
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REAL_LQ, needs_shared_data
from PIL import Image

from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.face import FaceDetector
from vqfr.io import read_image, write_image
from vqfr.restore import FaceRestorer, zoo
from vqfr.restore.batch import collect_inputs, output_stems
from vqfr.restore.zoo import ZooModel, resolve_weights
from vqfr.utils.known_files import fetch


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


@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory, tiny_checkpoint) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_v2.pth", "VQFRv2")


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
@needs_shared_data
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


@needs_shared_data
@pytest.mark.parametrize("upscale", [1, 1.5, 3, 4])
def test_output_size_follows_upscale(restorer, portrait, upscale):
    result = restorer.restore(portrait, upscale=upscale)
    h, w = portrait.shape[:2]
    assert result.image.shape[:2] == (round(h * upscale), round(w * upscale))
    assert len(result.faces) == 1


@needs_shared_data
def test_gray_input_gives_gray_output(restorer, portrait):
    gray = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    result = restorer.restore(gray)
    assert result.image.shape == (gray.shape[0] * 2, gray.shape[1] * 2) and result.image.dtype == np.uint8
    assert len(result.faces) == 1


@needs_shared_data
def test_rgba_alpha_is_kept_and_resized(restorer, portrait):
    h, w = portrait.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    result = restorer.restore(np.dstack([portrait, alpha]))
    assert result.image.shape == (2 * h, 2 * w, 4)
    expected = cv2.resize(alpha, (2 * w, 2 * h), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(result.image[..., 3], expected)
    assert len(result.faces) == 1


@needs_shared_data
def test_16bit_input_stays_16bit(restorer, portrait):
    deep = portrait.astype(np.uint16) * 257 + 100
    result = restorer.restore(deep, upscale=1)
    assert result.image.dtype == np.uint16 and result.image.shape == deep.shape
    np.testing.assert_array_equal(result.image[-5:], deep[-5:])  # background keeps all 16 bits
    assert len(result.faces) == 1


@needs_shared_data
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


@needs_shared_data
def test_aligned_face_and_only_center_face(restorer):
    result = restorer.restore(REAL_LQ / "aligned" / "Adele_crop.png", aligned=True, upscale=1)
    assert result.image.shape == (512, 512, 3)
    np.testing.assert_array_equal(result.image, result.faces[0].restored)
    whole = restorer.restore(REAL_LQ / "whole" / "10045.png", upscale=1, only_center_face=True)
    assert len(whole.faces) == 1
    assert [s["reason"] for s in whole.skipped] == ["not the centre face"] * 2  # 3 people found


@needs_shared_data
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


@needs_shared_data
def test_vqfr_v1_checkpoint_notes_that_fidelity_is_ignored(tmp_path, tiny_checkpoint):
    ckpt = tiny_checkpoint(tmp_path / "tiny_v1.pth", "VQFRv1")
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


def test_download_verifies_checksum_before_moving_into_place(tmp_path, monkeypatch):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path / "home"))
    payload = b"pretend weights" * 1000
    source = tmp_path / "remote.pth"
    source.write_bytes(payload)
    good = ZooModel("X", "VQFRv2", "x.pth", source.as_uri(), sha256=hashlib.sha256(payload).hexdigest())
    target = tmp_path / "home" / "x.pth"
    assert fetch(good, progress=False) == target and target.read_bytes() == payload
    bad = ZooModel("X", "VQFRv2", "y.pth", source.as_uri(), sha256="0" * 64)
    with pytest.raises(VQFRError, match="SHA-256"):
        fetch(bad, progress=False)
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["x.pth"]


# ---------------------------------------------------------------- CLI
@needs_shared_data
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


@needs_shared_data
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


@needs_shared_data
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
    write_image(tmp_path / "in" / "x.png", _no_face())
    args = ["-o", str(tmp_path / "out"), "--model", "VQFR_v2", "--no-download"]
    rc = main(["restore", "-i", str(tmp_path / "in" / "x.png"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and str(tmp_path / "home" / "VQFR_v2.pth") in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # created and locked before the model loaded, removed again


# ---------------------------------------------------------------- hardening (issue 8)
def _run(*args: str) -> int:
    return main(["restore", *map(str, args)])


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_output_inside_the_folder_of_a_file_or_glob_input_is_refused(tiny_v2, tmp_path, monkeypatch, capsys):
    inp = tmp_path / "in2"
    write_image(inp / "face.png", _no_face())
    write_image(inp / "sub" / "b.png", _no_face())
    missing = tmp_path / "missing.pth"  # the check must come before the model is looked for
    for args in (
        ["-i", inp / "**" / "*.png", "-r", "-o", inp / "out"],
        ["-i", inp / "sub" / "*.png", "-o", inp / "out"],  # the glob's fixed part is in2/sub; in2/out is beside it
        ["-i", inp / "face.png", "-o", inp / "newout"],
        ["-i", inp / "sub" / "b.png", "-o", inp / "sub" / "deep" / "out"],
    ):
        rc = _run(*args, "--model", missing, "-s", 1)
        err = capsys.readouterr().err
        if args[1] == inp / "sub" / "*.png":
            assert rc == 2 and "checkpoint not found" in err  # outside in2/sub: allowed
            continue
        assert rc == 2 and "choose a folder outside it" in err and len(err.strip().splitlines()) == 1, err
    assert _files(inp) == ["face.png", "sub/b.png"]
    monkeypatch.chdir(inp)  # the plain form: a file in the current folder, an output folder next to it
    assert _run("-i", "face.png", "-o", "results", "--model", missing) == 2
    assert "inside" in capsys.readouterr().err and not (inp / "results").exists()


def test_unwritable_output_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    write_image(tmp_path / "in" / "x.png", _no_face())
    real_mkdir = os.mkdir

    def read_only_mkdir(path, *args, **kwargs):
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    rc = _run("-i", tmp_path / "in" / "x.png", "-o", tmp_path / "locked" / "out", "--model", tmp_path / "no.pth")
    err = capsys.readouterr().err
    assert rc == 2 and "cannot create the output folder" in err and "Permission denied" in err
    assert len(err.strip().splitlines()) == 1


def test_results_json_that_cannot_be_written_is_one_line(tiny_v2, tmp_path, monkeypatch, capsys):
    from vqfr.utils import atomic

    write_image(tmp_path / "in" / "x.png", _no_face())

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_write_text", full_disk)
    rc = _run("-i", tmp_path / "in" / "x.png", "-o", tmp_path / "out", "--model", tiny_v2, "-q")
    err = capsys.readouterr().err
    assert rc == 2 and "results.json (No space left on device)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_input_leaves_none_of_its_files(tiny_v2, tmp_path, monkeypatch, capsys, failure):
    from vqfr.utils import atomic

    inp = tmp_path / "in"
    for name in ("a", "b", "c"):
        write_image(inp / f"{name}.png", _no_face())
    real_replace = os.replace

    def replace(src, dst):  # the disk fills up (or Ctrl-C comes) while b's third file is put in place
        if Path(dst).name == "b_00.png" and Path(dst).parent.name == "cmp":
            raise failure
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    out = tmp_path / "out"
    rc = _run("-i", inp, "-o", out, "--model", tiny_v2, "--aligned", "-s", 0.25)
    err = capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    listed = {report_path for e in report["inputs"] for report_path in _listed(e)}
    assert listed == {str(out / f) for f in _files(out) if f != "results.json"}  # exactly what exists
    assert not any("b" in Path(f).stem.split("_")[0] for f in _files(out))  # none of b's four files
    if isinstance(failure, KeyboardInterrupt):
        assert rc == 130 and "interrupted" in err
        assert [Path(e["input"]).name for e in report["inputs"]] == ["a.png"]
    else:
        assert rc == 1 and [e["status"] for e in report["inputs"]] == ["ok", "error", "ok"]
        assert "b.png: cannot write its outputs" in err and "No space left on device" in err
        assert len(_files(out)) == 1 + 2 * 4


def _listed(entry: dict) -> list[str]:
    return ([entry["output"]] if entry["output"] else []) + [
        face[k] for face in entry["faces"] for k in ("cropped", "restored", "cmp")
    ]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_outputs_get_normal_permissions(tiny_v2, tmp_path):
    write_image(tmp_path / "in" / "x.png", _no_face())
    saved = os.umask(0o022)
    try:
        assert _run("-i", tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_v2, "--aligned", "-q") == 0
    finally:
        os.umask(saved)
    modes = {f: (tmp_path / "out" / f).stat().st_mode & 0o777 for f in _files(tmp_path / "out")}
    assert len(modes) == 5 and set(modes.values()) == {0o644}, modes


@pytest.mark.skipif(os.name != "posix", reason="advisory locks are POSIX-only")
def test_second_run_into_the_same_folder_is_refused(tiny_v2, tmp_path, capsys, lock_holder):
    write_image(tmp_path / "in" / "x.png", _no_face())
    out = tmp_path / "out"
    other = lock_holder(out)
    rc = _run("-i", tmp_path / "in", "-o", out, "--model", tiny_v2, "--aligned", "-q")
    err = capsys.readouterr().err
    assert rc == 2 and f"in use by another run (pid {other.pid} on " in err and len(err.strip().splitlines()) == 1
    other.communicate("")  # the first run ends: the folder is free again
    assert _run("-i", tmp_path / "in", "-o", out, "--model", tiny_v2, "--aligned", "-q") == 0
    faces = ["cmp/x_00.png", "cropped_faces/x_00.png", "restored_faces/x_00.png"]
    assert _files(out) == sorted(["results.json", "restored_imgs/x.png", *faces])


@pytest.mark.parametrize("suffix", ["/../../../escaped", "a/b", "..", "a\\b", "x\ny", " ", "\t"])
def test_suffix_that_is_not_a_plain_name_is_refused(tiny_v2, tmp_path, capsys, suffix):
    write_image(tmp_path / "in" / "x.png", _no_face())
    out = tmp_path / "deep" / "er" / "out"
    rc = _run("-i", tmp_path / "in", "-o", out, "--model", tiny_v2, "--aligned", "--suffix", suffix, "-q")
    err = capsys.readouterr().err
    assert rc == 2 and "suffix" in err and len(err.strip().splitlines()) == 1
    assert _files(tmp_path) == ["in/x.png"]


def test_run_batch_refuses_a_bad_suffix_too(restorer, tmp_path):
    from vqfr.restore.batch import BatchOptions, run_batch

    write_image(tmp_path / "in" / "x.png", _no_face())
    with pytest.raises(VQFRError, match="suffix"):
        run_batch(restorer, collect_inputs(tmp_path / "in"), tmp_path / "out", BatchOptions(suffix="../x"), False)
    assert _files(tmp_path) == ["in/x.png"]


def _gif(path: Path, frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.roll(_no_face(), 7 * i, axis=1)) for i in range(frames)]
    images[0].save(path, save_all=frames > 1, append_images=images[1:], duration=100)


def test_gif_inputs_restore_the_first_frame_as_png(tiny_v2, tmp_path):
    _gif(tmp_path / "in" / "anim.gif", 3)
    _gif(tmp_path / "in" / "still.gif", 1)
    out = tmp_path / "out"
    assert _run("-i", tmp_path / "in" / "anim.gif", "-o", out, "--model", tiny_v2, "-s", 1, "-q") == 0
    entry = json.loads((out / "results.json").read_text())["inputs"][0]
    assert entry["status"] == "no_face" and entry["output"] == str(out / "restored_imgs" / "anim.png")
    assert any("first of its 3 frames" in n for n in entry["notes"])
    first = read_image(tmp_path / "in" / "anim.gif").pixels
    np.testing.assert_array_equal(read_image(entry["output"]).pixels, first)
    # a folder scan takes GIFs too, with the same rule
    out2 = tmp_path / "out2"
    assert _run("-i", tmp_path / "in", "-o", out2, "--model", tiny_v2, "-s", 1, "-q") == 0
    assert _files(out2 / "restored_imgs") == ["anim.png", "still.png"]
    notes = [n for e in json.loads((out2 / "results.json").read_text())["inputs"] for n in e["notes"]]
    assert any("its single frame" in n for n in notes)


def test_api_arguments_of_the_wrong_type_are_one_line_errors(restorer, tiny_v2):
    import torch

    with pytest.raises(VQFRError, match="upscale must be a number, got None"):
        FaceRestorer(model=str(tiny_v2), device="cpu", upscale=None)
    with pytest.raises(VQFRError, match="upscale must be a number, got 'x'"):
        restorer.restore(_no_face(), upscale="x")
    with pytest.raises(VQFRError, match="fidelity must be a number"):
        restorer.restore(_no_face(), fidelity="high")
    with pytest.raises(VQFRError, match="batch size"):
        FaceRestorer(model=str(tiny_v2), device="cpu", batch_size="4")
    with pytest.raises(VQFRError, match="crop 0 is shape \\(64, 64\\) uint8"):
        restorer.restore_crops([np.zeros((64, 64), np.uint8)])
    with pytest.raises(VQFRError, match="crop 1 is list"):
        restorer.restore_crops([np.zeros((64, 64, 3), np.uint8), [1, 2, 3]])
    on_cpu = FaceRestorer(model=str(tiny_v2), device=torch.device("cpu"))
    assert on_cpu.device == torch.device("cpu")
    assert restorer.restore_crops([np.zeros((64, 64, 3), np.uint8)])[0].shape == (512, 512, 3)


def test_a_file_name_with_a_newline_stays_on_one_line(tiny_v2, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "bad\nname.png").write_text("not an image")
    write_image(inp / "good.png", _no_face())
    rc = _run("-i", inp, "-o", tmp_path / "out", "--model", tiny_v2, "--aligned", "-q")
    err = capsys.readouterr().err
    assert rc == 1
    failed = [line for line in err.splitlines() if "failed:" in line and "not an image" in line]
    assert len(failed) == 1 and "bad\\nname.png" in failed[0], err
    assert "name.png" not in err.replace("bad\\nname.png", "")  # no line starts with the rest of the name


def test_info_tells_truncated_and_wrong_checksum_weights_from_good_ones(tiny_v2, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("VQFR_HOME", str(home))
    data = tiny_v2.read_bytes()
    (home / "VQFR_v2.pth").write_bytes(data)
    (home / "VQFR_v1-33a1fac5.pth").write_bytes(data)  # not the released file: its name's sum does not match
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    v2 = next(line for line in out.splitlines() if "VQFR_v2.pth" in line)
    v1 = next(line for line in out.splitlines() if "VQFR_v1-33a1fac5.pth" in line)
    assert "present (complete and undamaged" in v2
    assert "present but corrupt or truncated: SHA-256" in v1 and "33a1fac5" in v1
    (home / "VQFR_v2.pth").write_bytes(data[: len(data) // 2])
    assert main(["info"]) == 0
    v2 = next(line for line in capsys.readouterr().out.splitlines() if "VQFR_v2.pth" in line)
    assert "present but truncated or corrupt" in v2 and "download it again" in v2

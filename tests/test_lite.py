"""``--model auto``: it picks the published model when it can, the bundled VQFR_lite when it cannot (saying
why), and today's strict error when this build bundles no VQFR_lite. The bundled file is stood in for by a
tiny checkpoint here; tests/test_lite_model.py checks the real shipped file."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest

from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.restore import zoo
from vqfr.restore.zoo import resolve_weights


@pytest.fixture
def lite(tmp_path, monkeypatch, tiny_checkpoint) -> Path:
    """A tiny VQFRv2 standing in for the bundled VQFR_lite file."""
    path = tiny_checkpoint(tmp_path / "bundled" / "VQFR_lite.pth", "VQFRv2")
    real = zoo.bundled_path
    monkeypatch.setattr(zoo, "bundled_path", lambda f: path if f.name == "VQFR_lite" else real(f))
    return path


def _offline(monkeypatch, home: Path) -> None:
    monkeypatch.setenv("VQFR_HOME", str(home))
    monkeypatch.delenv("VQFR_OFFLINE", raising=False)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(zoo.urllib.request, "urlopen", no_network)


def test_auto_prefers_the_published_model_when_it_is_there(tmp_path, monkeypatch, tiny_checkpoint):
    _offline(monkeypatch, tmp_path)
    published = tiny_checkpoint(tmp_path / "VQFR_v2.pth", "VQFRv2")
    found = resolve_weights("auto", download=False)
    assert found.path == published and found.model.name == "VQFR_v2"
    assert found.reason.startswith("model auto -> VQFR_v2")


def test_auto_falls_back_to_lite_when_the_download_fails(tmp_path, monkeypatch, lite):
    _offline(monkeypatch, tmp_path)
    found = resolve_weights("auto", progress=False)
    assert found.model.name == "VQFR_lite" and found.path == lite
    assert "download failed: no route to host" in found.reason
    assert str(tmp_path / "VQFR_v2.pth") in found.reason  # how to get the published weights
    assert "\n" not in found.reason
    off = resolve_weights("auto", download=False)
    assert off.model.name == "VQFR_lite" and "downloads are switched off" in off.reason


def test_auto_does_not_hide_a_damaged_published_file(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    monkeypatch.setitem(zoo.ZOO, "VQFR_v2", zoo.ZooModel(**{**zoo.ZOO["VQFR_v2"].__dict__, "sha256": "0" * 64}))
    (tmp_path / "VQFR_v2.pth").write_bytes(b"half a download")
    with pytest.raises(VQFRError, match="SHA-256"):
        resolve_weights("auto", download=False)


def test_named_published_model_stays_strict_offline(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(VQFRError, match="VQFR_v2 is not on this machine"):
        resolve_weights("VQFR_v2", download=False)


def test_auto_without_a_bundled_model_keeps_the_published_models_error(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    monkeypatch.setattr(zoo, "bundled_path", lambda f: tmp_path / "not-shipped" / f.filename)
    with pytest.raises(VQFRError, match="model VQFR_v2 is not on this machine and downloads are switched off") as info:
        resolve_weights("auto", download=False)
    assert str(tmp_path / "VQFR_v2.pth") in str(info.value)
    with pytest.raises(VQFRError, match="VQFR_lite is not part of this vqfr installation"):
        resolve_weights("VQFR_lite")


def test_cli_default_model_offline_says_once_which_model_ran_and_records_it(tmp_path, monkeypatch, capsys, lite):
    import numpy as np

    from vqfr.io import write_image

    _offline(monkeypatch, tmp_path / "home")
    write_image(tmp_path / "in" / "face.png", np.full((512, 512, 3), 120, np.uint8))
    out = tmp_path / "out"
    assert main(["restore", "-i", str(tmp_path / "in"), "-o", str(out), "--aligned", "-s", "1"]) == 0
    err = capsys.readouterr().err
    chosen = [line for line in err.splitlines() if line.startswith("model auto -> ")]
    assert len(chosen) == 1 and chosen[0].startswith("model auto -> VQFR_lite") and "download failed" in chosen[0]
    report = json.loads((out / "results.json").read_text())
    assert report["model"]["name"] == "VQFR_lite" and report["model"]["why"] == chosen[0]
    assert report["model"]["face_size"] == 64  # the stand-in's size: faces are run at the model's size
    assert all(chosen[0] not in entry.get("notes", []) for entry in report["inputs"])  # said once, not per photo

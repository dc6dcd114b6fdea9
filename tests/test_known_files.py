"""One table of known weight files (models and metric weights), one cache root, one checksum rule."""

from __future__ import annotations

import pytest

from vqfr.errors import VQFRError
from vqfr.metrics import weights as W
from vqfr.nn.registry import architecture, is_registered
from vqfr.restore import zoo
from vqfr.utils.known_files import FILES, cache_path, fetch, verify


def test_models_and_metric_weights_are_one_table():
    assert set(zoo.ZOO) == {name for name, f in FILES.items() if f.arch is not None}
    assert all(is_registered(f.arch) for f in zoo.ZOO.values())
    assert architecture("VQFRv2").weights == ("VQFR_v2", "VQFR_lite")
    assert architecture("VQFRv1").weights == ("VQFR_v1",)
    for spec in (W.LPIPS_VGG16, W.LPIPS_LINEAR, W.FID_INCEPTION, W.FID_FFHQ512_STATS, W.ARCFACE_R18):
        assert FILES[spec.name] is spec and spec.arch is None and spec.option.startswith("--")


def test_one_cache_root_for_models_and_metric_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path))
    assert cache_path(zoo.ZOO["VQFR_v2"]) == tmp_path / "VQFR_v2.pth"
    assert cache_path(W.FID_INCEPTION) == tmp_path / "metrics" / W.FID_INCEPTION.filename
    from vqfr.metrics.evaluation import EvalOptions, fill_cached_weights

    (tmp_path / "metrics").mkdir()
    cache_path(W.LPIPS_LINEAR).write_bytes(b"weights")
    filled = fill_cached_weights(EvalOptions()).weights
    assert filled == {"lpips_weights": str(tmp_path / "metrics" / "vgg.pth")}


@pytest.mark.parametrize("name", ["VQFR_v1", "lpips_vgg16"])
def test_one_checksum_rule_and_wording_for_every_known_file(tmp_path, name):
    known = FILES[name]
    wrong = tmp_path / known.filename
    wrong.write_bytes(b"not the published file")
    with pytest.raises(VQFRError) as err:
        verify(wrong, known)
    assert str(err.value) == (
        f"{wrong} is corrupt or not the published file: SHA-256 {_sum(wrong)[:8]}... is not the published "
        f"{known.sha256}...; delete it and download it again"
    )
    mine = tmp_path / "my_own.pth"  # another name: the user's own file, not compared
    mine.write_bytes(b"weights I trained")
    verify(mine, known)


def test_a_model_passed_by_path_under_its_published_name_is_checked_too(tmp_path):
    wrong = tmp_path / "VQFR_v1-33a1fac5.pth"
    wrong.write_bytes(b"half a download")
    with pytest.raises(VQFRError, match="corrupt or not the published file"):
        zoo.resolve_weights("VQFR_v1", weights=wrong)


def test_offline_message_names_the_exact_path_for_metric_weights_too(tmp_path, monkeypatch):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path))
    monkeypatch.setenv("VQFR_OFFLINE", "1")
    with pytest.raises(VQFRError) as err:
        fetch(W.LPIPS_VGG16)
    assert str(err.value) == (
        f"weight file vgg16-397923af.pth is not on this machine and downloads are switched off: download "
        f"{W.LPIPS_VGG16.url} and save it as {tmp_path / 'metrics' / 'vgg16-397923af.pth'}, "
        "or pass --lpips-vgg-weights PATH"
    )


def _sum(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()

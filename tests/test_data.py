"""Training data: folder and LMDB face datasets, the resumable sampler, paired test-set generation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ALIGNED_FACES

from vqfr.cli import main
from vqfr.data import (
    DegradationConfig,
    HQFaceDataset,
    InfiniteBatchSampler,
    PairedFaceDataset,
    make_paired_testset,
    write_lmdb,
)
from vqfr.data.images import read_rgb_float, write_png
from vqfr.errors import VQFRError


def _faces(folder: Path, n: int = 4, size: int = 96) -> list[np.ndarray]:
    """A few face images: the shared aligned faces when present, else smooth synthetic ones."""
    folder.mkdir(parents=True, exist_ok=True)
    imgs = []
    shared = sorted(ALIGNED_FACES.glob("*.png"))[:n] if ALIGNED_FACES.is_dir() else []
    for i in range(n):
        if i < len(shared):
            import cv2

            img = cv2.resize(read_rgb_float(shared[i]), (size, size), interpolation=cv2.INTER_AREA)
        else:
            rng = np.random.default_rng(i)
            img = np.clip(rng.uniform(0.2, 0.8, (1, 1, 3)) + 0.1 * rng.standard_normal((size, size, 3)), 0, 1)
        img = np.clip(img, 0, 1).astype(np.float32)
        write_png(folder / f"face{i}.png", img)
        imgs.append(img)
    return imgs


def test_folder_and_lmdb_give_the_same_samples(tmp_path):
    imgs = _faces(tmp_path / "hq")
    write_lmdb(tmp_path / "hq.lmdb", [(f"face{i}", im) for i, im in enumerate(imgs)])
    deg = DegradationConfig(downsample_range=(1, 4))
    a = HQFaceDataset(tmp_path / "hq", 64, hflip=True, degradation=deg, seed=3)
    b = HQFaceDataset(tmp_path / "hq.lmdb", 64, hflip=True, degradation=deg, seed=3)
    assert len(a) == len(b) == 4
    for key in [(0, 0), (1, 2), (5, 3)]:
        sa, sb = a[key], b[key]
        assert sa["gt"].shape == (3, 64, 64) and sa["lq"].shape == (3, 64, 64)
        assert sa["gt"].min() >= -1 and sa["gt"].max() <= 1
        assert torch.equal(sa["gt"], sb["gt"]) and torch.equal(sa["lq"], sb["lq"])
        assert sa["name"] == sb["name"]
    # deterministic per (epoch, index); other epochs draw new flips / degradations
    assert torch.equal(a[(2, 1)]["lq"], a[(2, 1)]["lq"])
    assert not all(torch.equal(a[(e, 1)]["lq"], a[(0, 1)]["lq"]) for e in range(1, 4))


def test_hflip_happens_about_half_the_time(tmp_path):
    _faces(tmp_path / "hq", n=1)
    ds = HQFaceDataset(tmp_path / "hq", 64, hflip=True, seed=0)
    plain = HQFaceDataset(tmp_path / "hq", 64, hflip=False)[0]["gt"]
    flips = sum(torch.equal(ds[(e, 0)]["gt"], plain.flip(-1)) for e in range(40))
    assert 10 < flips < 30
    assert all(torch.equal(ds[(e, 0)]["gt"], plain) or torch.equal(ds[(e, 0)]["gt"], plain.flip(-1)) for e in range(5))


def test_sampler_is_resumable_and_splits_ranks():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(InfiniteBatchSampler(10, 3, seed=1), 12)
    resumed = take(InfiniteBatchSampler(10, 3, seed=1, start_batch=5), 7)
    assert resumed == full[5:]
    # two ranks: disjoint indices within an epoch, same number of batches
    r0 = take(InfiniteBatchSampler(10, 2, rank=0, world_size=2, seed=1), 2)
    r1 = take(InfiniteBatchSampler(10, 2, rank=1, world_size=2, seed=1), 2)
    i0 = {i for b in r0 for _, i in b}
    i1 = {i for b in r1 for _, i in b}
    assert not i0 & i1 and len(i0 | i1) == 8
    # a dataset smaller than a global batch is tiled
    tiny = take(InfiniteBatchSampler(2, 4, seed=0), 3)
    assert all(len(b) == 4 for b in tiny)


def test_paired_testset_is_reproducible_and_survives_a_bad_file(tmp_path, capsys):
    _faces(tmp_path / "hq", n=3)
    (tmp_path / "hq" / "broken.png").write_bytes(b"not an image")
    rc = main(["degrade", str(tmp_path / "hq"), str(tmp_path / "a"), "--seed", "5", "--size", "64"])
    assert rc == 1  # the other pairs are written, but a failed image is a failure (as for restore, evaluate)
    captured = capsys.readouterr()
    assert "skipped broken" in captured.err and "wrote 3 pairs" in captured.out
    make_paired_testset(tmp_path / "hq", tmp_path / "b", DegradationConfig(), seed=5, size=64)
    for name in ("face0", "face1", "face2"):
        la = read_rgb_float(tmp_path / "a" / "lq" / f"{name}.png")
        lb = read_rgb_float(tmp_path / "b" / "lq" / f"{name}.png")
        assert la.shape == (64, 64, 3) and np.array_equal(la, lb)
        assert (tmp_path / "a" / "gt" / f"{name}.png").is_file()
    meta = (tmp_path / "a" / "degradations.json").read_text()
    assert '"seed": 5' in meta and "jpeg_quality" in meta
    other = make_paired_testset(tmp_path / "hq", tmp_path / "c", DegradationConfig(), seed=6, size=64)
    assert len(other.written) == 3
    assert not np.array_equal(
        read_rgb_float(tmp_path / "c" / "lq" / "face0.png"), read_rgb_float(tmp_path / "a" / "lq" / "face0.png")
    )
    # validation pairs read back by name
    pairs = PairedFaceDataset(tmp_path / "a" / "gt", 64, lq_root=tmp_path / "a" / "lq")
    assert len(pairs) == 3 and pairs[0]["lq"].shape == (3, 64, 64)


def test_degrade_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["degrade", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vqfr degrade: error:") and "\n" not in err
    _faces(tmp_path / "hq", n=1)
    assert main(["degrade", str(tmp_path / "hq"), str(tmp_path / "out"), "--jpeg", "0", "500"]) == 2


def test_dataset_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VQFRError, match="no images"):
        HQFaceDataset(tmp_path / "empty", 64)
    with pytest.raises(VQFRError, match="meta_info"):
        (tmp_path / "x.lmdb").mkdir()
        HQFaceDataset(tmp_path / "x.lmdb", 64)
    _faces(tmp_path / "hq", n=1)
    with pytest.raises(VQFRError, match="multiple of 32"):
        HQFaceDataset(tmp_path / "hq", 50)


def _one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("vqfr degrade: error:") and "\n" not in err, err
    return err


def test_empty_image_is_skipped_by_degrade_and_named_by_the_dataset(tmp_path, capsys):
    from vqfr.data.images import decode_rgb_float

    for data in (b"", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(VQFRError, match="cannot decode image x.png"):
            decode_rgb_float(data, "x.png")
    _faces(tmp_path / "hq", n=2, size=64)
    (tmp_path / "hq" / "empty.png").write_bytes(b"")
    rc = main(["degrade", str(tmp_path / "hq"), str(tmp_path / "out"), "--size", "64"])
    captured = capsys.readouterr()
    assert rc == 1 and "wrote 2 pairs" in captured.out and "1 failed" in captured.out
    assert "skipped empty: cannot decode image" in captured.err and "empty" in captured.err
    ds = HQFaceDataset(tmp_path / "hq", 64)
    bad = ds.source.names.index("empty")
    with pytest.raises(VQFRError, match=r"empty\.png.*empty"):
        ds[bad]


def test_degrade_cli_rejects_bad_paths_configs_and_ranges(tmp_path, capsys):
    _faces(tmp_path / "hq", n=1, size=64)
    hq, out = str(tmp_path / "hq"), str(tmp_path / "out")
    err = _one_line_error(capsys, ["degrade", str(tmp_path / "hq" / "face0.png"), out])
    assert "is not a folder" in err and "not found" not in err
    (tmp_path / "afile").write_text("x")
    assert "not a folder" in _one_line_error(capsys, ["degrade", hq, str(tmp_path / "afile")])
    err = _one_line_error(capsys, ["degrade", hq, str(tmp_path / "afile" / "sub")])
    assert "afile exists and is not a folder" in err
    train_cfg = tmp_path / "train.yml"
    train_cfg.write_text("stage: codebook\ndata:\n  train:\n    root: /data/ffhq\n    size: 512\n")
    assert "no degradation settings" in _one_line_error(capsys, ["degrade", hq, out, "--config", str(train_cfg)])
    (tmp_path / "empty.yml").write_text("")
    assert "no degradation settings" in _one_line_error(
        capsys, ["degrade", hq, out, "--config", str(tmp_path / "empty.yml")]
    )
    for flags in (
        ["--blur-sigma", "nan", "3"],
        ["--blur-sigma", "1", "inf"],
        ["--noise", "-5", "3"],
        ["--noise", "0", "nan"],
        ["--downsample", "0", "4"],
        ["--jpeg", "0", "100"],
    ):
        _one_line_error(capsys, ["degrade", hq, out, *flags])
    assert not (tmp_path / "out").exists()
    # a training config with a degradation block is used
    train_cfg.write_text("data:\n  train:\n    degradation: {noise_range: [1, 2], jpeg_range: [50, 60]}\n")
    assert main(["degrade", hq, out, "--size", "64", "--config", str(train_cfg)]) == 0
    import json

    meta = json.loads((tmp_path / "out" / "degradations.json").read_text())
    assert meta["degradation"]["noise_range"] == [1, 2] and 50 <= meta["images"]["face0"]["jpeg_quality"] <= 60


def test_rerun_with_other_options_is_refused_unless_overwrite(tmp_path, capsys):
    import json

    _faces(tmp_path / "hq", n=2, size=64)
    hq, out = str(tmp_path / "hq"), str(tmp_path / "out")
    assert main(["degrade", hq, out, "--size", "64", "--seed", "1", "--noise", "0", "5"]) == 0
    meta_path = tmp_path / "out" / "degradations.json"
    before = meta_path.read_text()
    lq_before = (tmp_path / "out" / "lq" / "face0.png").read_bytes()
    for other in (["--seed", "2", "--noise", "0", "5"], ["--seed", "1", "--noise", "0", "9"], ["--seed", "1"]):
        err = _one_line_error(capsys, ["degrade", hq, out, "--size", "64", *other])
        assert "--overwrite" in err and "different" in err
    _one_line_error(capsys, ["degrade", hq, out, "--size", "32", "--seed", "1", "--noise", "0", "5"])
    assert meta_path.read_text() == before
    # same options: existing pairs are kept and skipped
    capsys.readouterr()
    assert main(["degrade", hq, out, "--size", "64", "--seed", "1", "--noise", "0", "5"]) == 0
    assert "2 already present" in capsys.readouterr().out
    assert json.loads(meta_path.read_text()) == json.loads(before)
    # --overwrite redoes everything and records the new options
    assert main(["degrade", hq, out, "--size", "64", "--seed", "2", "--noise", "0", "9", "--overwrite"]) == 0
    meta = json.loads(meta_path.read_text())
    assert meta["seed"] == 2 and meta["degradation"]["noise_range"] == [0.0, 9.0]
    assert (tmp_path / "out" / "lq" / "face0.png").read_bytes() != lq_before
    meta_path.write_text("{broken")
    assert "cannot read" in _one_line_error(capsys, ["degrade", hq, out, "--size", "64", "--seed", "2"])


def test_include_and_exclude_patterns_hold_people_out(tmp_path):
    _faces(tmp_path / "hq", n=4)
    kept = HQFaceDataset(tmp_path / "hq", 64, exclude=["face1.*", "face3.png"])
    assert kept.source.names == ["face0", "face2"]
    held = PairedFaceDataset(tmp_path / "hq", 64, include=["face[13].png"])
    assert held.gt.names == ["face1", "face3"]
    with pytest.raises(VQFRError, match="no images left"):
        HQFaceDataset(tmp_path / "hq", 64, include=["nobody_*"])
    with pytest.raises(VQFRError, match="list of file-name patterns"):
        HQFaceDataset(tmp_path / "hq", 64, exclude="face1.png")


def test_augmentation_is_seeded_small_and_off_by_default(tmp_path):
    from vqfr.data import AugmentConfig

    _faces(tmp_path / "hq", n=2)
    plain = HQFaceDataset(tmp_path / "hq", 64, hflip=False, seed=1)
    cfg = AugmentConfig.from_dict({"scale": [0.9, 1.1], "rotate": 5, "shift": 0.03, "color": 0.1})
    aug = HQFaceDataset(tmp_path / "hq", 64, hflip=False, seed=1, augment=cfg)
    a, b = aug[(0, 1)]["gt"], aug[(0, 1)]["gt"]
    assert torch.equal(a, b)  # same key, same draw: resumes and workers see the same sample
    assert not torch.equal(a, aug[(1, 1)]["gt"])  # another epoch, another draw
    ref = plain[(0, 1)]["gt"]
    diff = (a - ref).abs().mean().item()
    assert 0 < diff < 0.3  # changed, but still the same face on the template
    assert a.min() >= -1 and a.max() <= 1


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"scale": [1.2, 0.8]}, "scale"),
        ({"rotate": 90}, "rotate"),
        ({"color": "lots"}, "color"),
        ({"zoom": 1}, "unknown key"),
        ("abc", "must be a mapping"),
    ],
)
def test_bad_augmentation_settings_are_one_line_errors(bad, match):
    from vqfr.data import AugmentConfig

    with pytest.raises(VQFRError, match=match):
        AugmentConfig.from_dict(bad)


def test_degrade_refuses_two_inputs_with_one_output_name(tmp_path, capsys):
    _faces(tmp_path / "hq", n=2, size=64)
    (tmp_path / "hq" / "face0.jpg").write_bytes((tmp_path / "hq" / "face0.png").read_bytes())
    rc = main(["degrade", str(tmp_path / "hq"), str(tmp_path / "out"), "--size", "64"])
    captured = capsys.readouterr()
    assert rc == 1 and "wrote 1 pairs" in captured.out and "2 failed" in captured.out
    assert "already present" not in captured.out
    assert "skipped face0.jpg: same output name face0.png as face0.png; rename one" in captured.err
    assert "skipped face0.png: same output name face0.png as face0.jpg; rename one" in captured.err
    assert sorted(p.name for p in (tmp_path / "out" / "gt").iterdir()) == ["face1.png"]


def test_degrade_messages_stay_one_line_per_file(tmp_path, capsys):
    _faces(tmp_path / "hq", n=1, size=64)
    (tmp_path / "hq" / "bad\nname.png").write_bytes(b"not an image")
    assert main(["degrade", str(tmp_path / "hq"), str(tmp_path / "out"), "--size", "64"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vqfr")]
    assert len(err) == 1 and err[0].startswith("vqfr degrade: skipped bad\\nname: cannot decode image"), err
    assert err[0].endswith("bad\\nname.png: not a readable image")


def test_training_reader_rejects_truncated_png_quietly(tmp_path, capfd, truncated_png):
    from vqfr.data.images import decode_rgb_float

    with pytest.raises(VQFRError) as e:
        decode_rgb_float(truncated_png(200, 200, 10), "t.png")
    assert str(e.value) == "cannot decode image t.png: truncated or corrupt (its image data stops after 10 of 200 rows)"
    assert capfd.readouterr().err == ""  # no "libpng error" line from OpenCV


def test_degrade_prints_nothing_of_opencv_for_corrupt_images(tmp_path, truncated_png):
    import subprocess
    import sys

    _faces(tmp_path / "hq", n=1, size=64)
    (tmp_path / "hq" / "cut.png").write_bytes(truncated_png(200, 200, 10))
    good = (tmp_path / "hq" / "face0.png").read_bytes()
    (tmp_path / "hq" / "half.png").write_bytes(good[: len(good) - 6])
    proc = subprocess.run(
        [sys.executable, "-m", "vqfr", "degrade", str(tmp_path / "hq"), str(tmp_path / "out"), "--size", "64"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("vqfr degrade: skipped")]
    assert len(ours) == 2 and "its image data stops after 10 of 200 rows" in ours[0]
    assert all(line.startswith(("vqfr degrade:", "degrade:")) for line in lines), lines  # ours and the progress bar


def test_degrade_checks_the_output_is_writable_first(tmp_path, capsys, monkeypatch):
    import os

    import vqfr.data.testset as testset_mod
    import vqfr.utils.paths as paths_mod

    _faces(tmp_path / "hq", n=1, size=64)
    real_access = os.access
    monkeypatch.setattr(paths_mod.os, "access", lambda p, mode: Path(p) != tmp_path and real_access(p, mode))

    def no_read(path):
        raise AssertionError("images read before the output was checked")

    monkeypatch.setattr(testset_mod, "read_rgb_float", no_read)
    err = _one_line_error(capsys, ["degrade", str(tmp_path / "hq"), str(tmp_path / "out")])
    assert err == f"vqfr degrade: error: cannot write the test set to {tmp_path / 'out'}: {tmp_path} is not writable"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_degrade_into_a_read_only_folder_is_one_line(tmp_path, capsys):
    _faces(tmp_path / "hq", n=1, size=64)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        err = _one_line_error(capsys, ["degrade", str(tmp_path / "hq"), str(tmp_path / "ro" / "out")])
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert "is not writable" in err


def test_degrade_full_disk_leaves_no_half_pair(tmp_path, capsys, monkeypatch):
    import errno

    import vqfr.data.testset as testset_mod

    _faces(tmp_path / "hq", n=2, size=64)
    real_write = testset_mod.write_png

    def lq_fails(path, img):
        if path.parent.name == "lq" and path.stem == "face1":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, img)

    monkeypatch.setattr(testset_mod, "write_png", lq_fails)
    assert main(["degrade", str(tmp_path / "hq"), str(tmp_path / "out"), "--size", "64"]) == 1
    assert "skipped face1: No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "gt").iterdir()) == ["face0.png"]  # no GT without its LQ

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(testset_mod, "atomic_write_text", full)
    capsys.readouterr()
    assert main(["degrade", str(tmp_path / "hq"), str(tmp_path / "out2"), "--size", "64"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    meta = tmp_path / "out2" / "degradations.json"
    assert err == f"vqfr degrade: error: cannot write {meta}: No space left on device"

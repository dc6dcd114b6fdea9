"""`vqfr evaluate` end to end: pairing, bad inputs, reports, learned metrics with test-made weights."""

import csv
import json

import cv2
import numpy as np
import pytest
import torch
from conftest import ALIGNED_FACES, needs_shared_data, write_tiny_lpips

from vqfr.cli import main
from vqfr.metrics import calculate_niqe, calculate_psnr, calculate_ssim, psnr_ssim_pair

pytestmark = needs_shared_data
NAMES = ("Adele_crop", "Julia_Roberts_crop", "Paris_Hilton_crop")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("VQFR_HOME", str(tmp_path / "empty_cache"))  # no user-cached weights
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def folders(tmp_path):
    """GT = three real faces at 192x192, restored = blurred copies, LQ = 48x48 versions."""
    gt, res, lq = tmp_path / "gt", tmp_path / "res", tmp_path / "lq"
    for d in (gt, res, lq):
        d.mkdir()
    for i, name in enumerate(NAMES):
        face = cv2.resize(cv2.imread(str(ALIGNED_FACES / f"{name}.png")), (192, 192), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(gt / f"{name}.png"), face)
        cv2.imwrite(str(res / f"{name}.png"), cv2.GaussianBlur(face, (0, 0), 0.8 + i))
        cv2.imwrite(str(lq / f"{name}.jpg"), cv2.resize(face, (48, 48)))
    return gt, res, lq


def _run(capsys, *argv):
    rc = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_scores_pairs_and_writes_reports(folders, tmp_path, capsys):
    gt, res, lq = folders
    out = tmp_path / "report"
    rc, stdout, _ = _run(
        capsys, "--restored", res, "--gt", gt, "--lq", lq, "--out", out, "--metrics", "psnr,ssim,niqe", "--workers", 1
    )
    assert rc == 0
    assert "psnr" in stdout and "3 image(s) evaluated, 0 skipped" in stdout
    data = json.loads((out / "metrics.json").read_text())
    rows = {r["name"]: r for r in data["images"]}
    for name in NAMES:
        a, b = cv2.imread(str(res / f"{name}.png")), cv2.imread(str(gt / f"{name}.png"))
        assert rows[name]["psnr"] == calculate_psnr(a, b, 0)
        assert rows[name]["ssim"] == calculate_ssim(a, b, 0)
        assert rows[name]["niqe"] == calculate_niqe(a, 0)
    mean_psnr = np.mean([rows[n]["psnr"] for n in NAMES])
    assert data["summary"]["psnr"]["mean"] == pytest.approx(mean_psnr)
    assert f"{mean_psnr:.4f}" in stdout
    with open(out / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == sorted(NAMES) and all(r["error"] == "" for r in table)
    html = (out / "report.html").read_text()
    # 2 best + 2 worst rows by PSNR, each with LQ | restored | GT thumbnails
    assert html.count("data:image/jpeg;base64") == 12 and "Worst" in html and "Best" in html
    best_section = html.split("Worst")[0]
    assert "Adele_crop" in best_section.split("Best")[-1]  # the least blurred image has the best PSNR


def test_bad_pairs_are_reported_and_the_rest_evaluated(folders, tmp_path, capsys):
    gt, res, _ = folders
    (res / "broken.png").write_bytes(b"definitely not a png")
    cv2.imwrite(str(gt / "broken.png"), np.zeros((192, 192, 3), np.uint8))
    cv2.imwrite(str(res / "small.png"), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(gt / "small.png"), np.zeros((192, 192, 3), np.uint8))
    cv2.imwrite(str(res / "orphan.png"), np.zeros((192, 192, 3), np.uint8))
    rc, stdout, stderr = _run(
        capsys, "--restored", res, "--gt", gt, "--out", tmp_path / "r", "--metrics", "psnr", "--workers", 1
    )
    assert rc == 1  # finished, but some inputs were skipped
    lines = stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("vqfr evaluate: skipped ") for line in lines)
    assert "broken: cannot read" in stderr and "not a decodable image" in stderr
    assert "small: size mismatch: small.png is 64x64, ground truth small.png is 192x192" in stderr
    assert "orphan: missing pair: no ground truth named orphan.*" in stderr
    assert "Traceback" not in stderr
    assert "3 image(s) evaluated, 3 skipped" in stdout
    table = {r["name"]: r for r in csv.DictReader(open(tmp_path / "r" / "metrics.csv"))}
    assert table["small"]["error"].startswith("size mismatch") and table["Adele_crop"]["psnr"]


def test_without_ground_truth_only_no_reference_metrics(folders, tmp_path, capsys):
    _, res, _ = folders
    rc, stdout, _ = _run(capsys, "--restored", res, "--out", tmp_path / "r", "--workers", 1)
    assert rc == 0
    assert "niqe" in stdout and "fid        n/a (no weights: --fid-weights)" in stdout
    assert "psnr" not in stdout
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(data["summary"]) == {"niqe", "fid"}


def test_missing_weights_are_named_in_the_table(folders, tmp_path, capsys):
    gt, res, _ = folders
    rc, stdout, _ = _run(
        capsys, "--restored", res, "--gt", gt, "--out", tmp_path / "r", "--metrics", "lpips,idd,fid", "--workers", 1
    )
    assert rc == 0
    assert "lpips      n/a (no weights: --lpips-weights, --lpips-vgg-weights)" in stdout
    assert "idd        n/a (no weights: --arcface-weights)" in stdout
    assert "fid        n/a (no weights: --fid-weights)" in stdout


def test_fatal_errors_are_one_line(tmp_path, folders, capsys):
    rc, _, stderr = _run(capsys, "--restored", tmp_path / "nope")
    assert rc == 2 and stderr.strip() == f"vqfr evaluate: error: not a folder: {tmp_path / 'nope'}"
    gt, res, _ = folders
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"junk")
    rc, _, stderr = _run(capsys, "--restored", bad, "--out", tmp_path / "r", "--workers", 1)
    assert rc == 2 and stderr.strip().splitlines()[-1] == (
        "vqfr evaluate: error: no image could be evaluated (see the messages above)"
    )


def test_bad_weight_file_is_one_line_even_with_workers(folders, tmp_path, capsys):
    gt, res, _ = folders
    (tmp_path / "junk.pth").write_bytes(b"junk")
    rc, _, stderr = _run(
        capsys,
        "--restored",
        res,
        "--gt",
        gt,
        "--out",
        tmp_path / "r",
        "--metrics",
        "idd",
        "--arcface-weights",
        tmp_path / "junk.pth",
        "--workers",
        2,
    )
    assert rc == 2 and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith(f"vqfr evaluate: error: --arcface-weights: {tmp_path / 'junk.pth'} is not a PyTorch")


def test_mean_var_correction_and_y_channel_options(folders, tmp_path, capsys):
    gt, res, _ = folders
    rc, _, _ = _run(
        capsys,
        "--restored",
        res,
        "--gt",
        gt,
        "--out",
        tmp_path / "r",
        "--metrics",
        "psnr,ssim",
        "--correct-mean-var",
        "--test-y-channel",
        "--crop-border",
        2,
        "--workers",
        1,
    )
    assert rc == 0
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    row = data["images"][0]
    a, b = cv2.imread(row["restored"]), cv2.imread(row["gt"])
    assert (row["psnr"], row["ssim"]) == psnr_ssim_pair(a, b, 2, True, True)
    assert data["settings"]["correct_mean_var"] is True


def test_dlib_substitutes(folders, tmp_path, capsys):
    gt, res, _ = folders
    rc, stdout, _ = _run(
        capsys, "--restored", res, "--gt", gt, "--out", tmp_path / "r", "--metrics", "idd_dlib,lmd_dlib", "--workers", 1
    )
    assert rc == 0 and "dlib substitute, degrees" in stdout and "dlib 68-point substitute, pixels" in stdout
    rows = json.loads((tmp_path / "r" / "metrics.json").read_text())["images"]
    assert all(r["idd_dlib"] > 0 and r["idd_dlib_l2"] > 0 and r["lmd_dlib"] >= 0 for r in rows)
    # more blur (later names in NAMES are blurred more) moves the identity further
    by_name = {r["name"]: r["idd_dlib"] for r in rows}
    assert by_name["Adele_crop"] < by_name["Paris_Hilton_crop"]


def test_parallel_workers_give_the_same_numbers(folders, tmp_path, capsys):
    gt, res, _ = folders
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        rc, _, _ = _run(
            capsys, "--restored", res, "--gt", gt, "--out", out, "--metrics", "psnr,ssim", "--workers", workers
        )
        assert rc == 0
        runs[workers] = json.loads((out / "metrics.json").read_text())["images"]
    assert runs[1] == runs[2] and len(runs[1]) == len(NAMES)


def test_learned_metrics_with_weight_files(folders, tmp_path, capsys):
    from vqfr.metrics.arcface import ArcFaceResNet18
    from vqfr.metrics.inception import FIDInceptionV3

    write_tiny_lpips(tmp_path)
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "incep.pth")
    torch.save(ArcFaceResNet18().state_dict(), tmp_path / "arc.pth")
    gt, res, _ = folders
    rc, stdout, _ = _run(
        capsys,
        "--restored",
        res,
        "--gt",
        gt,
        "--out",
        tmp_path / "r",
        "--metrics",
        "lpips,fid,idd",
        "--lpips-weights",
        tmp_path / "lin.pth",
        "--lpips-vgg-weights",
        tmp_path / "vgg16.pth",
        "--fid-weights",
        tmp_path / "incep.pth",
        "--arcface-weights",
        tmp_path / "arc.pth",
        "--save-fid-stats",
        tmp_path / "stats.npz",
        "--workers",
        1,
    )
    assert rc == 0, stdout
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    s = data["summary"]
    assert s["lpips"]["status"] == "ok" and s["lpips"]["mean"] > 0
    assert s["idd"]["status"] == "ok" and s["idd"]["mean"] > 0
    assert s["fid"]["status"] == "ok" and s["fid"]["reference"] == "ground-truth set (3 images)"
    assert s["fid"]["mean"] > 0
    assert data["settings"]["fid_weights"]["sha256"]
    assert (tmp_path / "stats.npz").is_file()
    # The restored set against its own saved statistics: FID 0.
    rc, stdout, _ = _run(
        capsys,
        "--restored",
        res,
        "--out",
        tmp_path / "r2",
        "--metrics",
        "fid",
        "--fid-weights",
        tmp_path / "incep.pth",
        "--fid-stats",
        tmp_path / "stats.npz",
        "--workers",
        1,
    )
    assert rc == 0
    fid = json.loads((tmp_path / "r2" / "metrics.json").read_text())["summary"]["fid"]["mean"]
    assert fid == pytest.approx(0.0, abs=1e-3)


def test_existing_file_as_out_fails_before_any_work(folders, tmp_path, capsys):
    gt, res, _ = folders
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    for out in (taken, taken / "sub"):
        rc, stdout, stderr = _run(capsys, "--restored", res, "--gt", gt, "--out", out, "--metrics", "psnr")
        assert rc == 2 and stdout == ""  # nothing was computed or printed
        assert stderr == f"vqfr evaluate: error: --out {out}: {taken} exists and is not a folder\n"
    assert taken.read_text() == "keep me"
    rc, stdout, stderr = _run(
        capsys,
        "--restored",
        res,
        "--gt",
        gt,
        "--out",
        tmp_path / "r",
        "--save-fid-stats",
        tmp_path,
        "--metrics",
        "psnr",
    )
    assert rc == 2 and stdout == "" and len(stderr.splitlines()) == 1 and "--save-fid-stats" in stderr


def test_full_reference_metrics_need_gt(folders, tmp_path, capsys):
    _, res, _ = folders
    for metrics in ("psnr", "niqe,ssim,lpips"):
        rc, stdout, stderr = _run(capsys, "--restored", res, "--out", tmp_path / "r", "--metrics", metrics)
        need = ",".join(m for m in metrics.split(",") if m != "niqe")
        assert rc == 2 and stdout == ""
        assert stderr == (
            f"vqfr evaluate: error: {need} compare with ground truth: give --gt DIR, "
            "or choose from niqe,fid without it\n"
        )
    assert not (tmp_path / "r").exists()


def test_sort_by_must_be_a_computed_per_image_metric(folders, tmp_path, capsys):
    gt, res, _ = folders
    for metrics, sort_by in (("psnr", "niqe"), ("psnr,fid", "fid")):
        rc, stdout, stderr = _run(
            capsys, "--restored", res, "--gt", gt, "--out", tmp_path / "r", "--metrics", metrics, "--sort-by", sort_by
        )
        assert rc == 2 and stdout == ""
        assert stderr == (
            f"vqfr evaluate: error: --sort-by {sort_by}: not a per-image metric of this run (choose from psnr)\n"
        )
    rc, _, _ = _run(
        capsys, "--restored", res, "--gt", gt, "--out", tmp_path / "r", "--metrics", "psnr,ssim", "--sort-by", "ssim"
    )
    assert rc == 0 and "by ssim" in (tmp_path / "r" / "report.html").read_text()


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "how many best and how many worst images report.html shows (default: 5)" in text
    assert "(default: 0)" in text and "(default: cpu)" in text and "(default: min(4, CPUs) = " in text


def test_unavailable_device_fails_before_any_work(folders, tmp_path, capsys):
    gt, res, _ = folders
    bogus = "cuda" if not torch.cuda.is_available() else "tpu"
    rc, out, stderr = _run(capsys, "--restored", res, "--gt", gt, "--device", bogus, "--out", tmp_path / "r")
    assert rc == 2 and len(stderr.strip().splitlines()) == 1
    assert f"--device {bogus}: no CUDA GPU" in stderr or f"unknown device '{bogus}'" in stderr
    assert not (tmp_path / "r").exists() and out == ""

"""The metric table (vqfr.metrics.table): the CLI, the evaluation and the reports all read it."""

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from vqfr.cli import main
from vqfr.metrics.table import METRICS, NO_GT_DEFAULT, Metric, digits


def mean_abs_error(options):
    """Scorer of the test's made-up metric: mean and largest absolute pixel difference."""

    def score(images):
        diff = np.abs(images.restored.astype(float) - images.gt.astype(float))
        return {"mae": float(diff.mean()), "max_error": float(diff.max())}

    return score


@pytest.fixture
def pairs(tmp_path):
    """gt/ and res/ with three 32x32 images; res{i} differs from gt{i} by i + 1 grey levels."""
    gt, res = tmp_path / "gt", tmp_path / "res"
    gt.mkdir()
    res.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.integers(0, 200, (32, 32, 3), dtype=np.uint8)
        cv2.imwrite(str(gt / f"face{i}.png"), img)
        cv2.imwrite(str(res / f"face{i}.png"), img + np.uint8(i + 1))
    return gt, res


def test_a_new_metric_is_one_table_entry(pairs, tmp_path, capsys, monkeypatch):
    scorer = f"{__name__}:mean_abs_error"
    entry = Metric("mae", True, True, 2, "grey levels", scorer, extra=(("max_error", 1),), rank=-1)
    monkeypatch.setitem(METRICS, "mae", entry)
    gt, res = pairs
    out = tmp_path / "r"
    argv = ["evaluate", "--restored", str(res), "--gt", str(gt), "--metrics", "psnr,mae", "--out", str(out)]
    assert main([*argv, "--workers", "1"]) == 0
    stdout = capsys.readouterr().out
    line = next(x for x in stdout.splitlines() if x.startswith("mae "))
    assert line.split(None, 3) == ["mae", "2.00", "3", "grey levels, lower is better"]
    with open(out / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "restored", "gt", "psnr", "mae", "max_error", "error"]
    assert [r[4:6] for r in rows[1:]] == [["1.00", "1.0"], ["2.00", "2.0"], ["3.00", "3.0"]]
    summary = json.loads((out / "metrics.json").read_text())["summary"]["mae"]
    assert summary == {"better": "lower", "unit": "grey levels", "mean": 2.0, "images": 3, "status": "ok"}
    html = (out / "report.html").read_text()
    assert "Best 2 by mae" in html  # rank -1: the default ordering metric
    assert html.split("Best 2 by mae")[1].index("face0") < html.split("Best 2 by mae")[1].index("face1")

    # --sort-by takes it, and without --gt it is refused as a full-reference metric
    assert main([*argv, "--workers", "2", "--sort-by", "psnr"]) == 0
    assert "Best 2 by psnr" in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["evaluate", "--restored", str(res), "--metrics", "mae", "--out", str(out)]) == 2
    assert "mae compare with ground truth: give --gt DIR" in capsys.readouterr().err


def test_the_cli_offers_what_the_table_declares(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for option in ("--lpips-weights", "--lpips-vgg-weights", "--fid-weights", "--arcface-weights"):
        assert f"{option} PATH" in text
    assert "subset of psnr,ssim,lpips,niqe,fid,idd,idd_dlib,lmd_dlib (default: all with --gt, else niqe,fid)" in text
    assert NO_GT_DEFAULT == ("niqe", "fid")
    assert digits("ssim") == 5 and digits("idd_dlib_l2") == 4


@pytest.mark.parametrize("name", list(METRICS))
def test_every_scorer_is_found(name):
    assert callable(METRICS[name].load_scorer())


def test_the_table_loads_without_torch_numpy_or_opencv():
    code = "import sys, vqfr.metrics.table; print([m for m in ('torch', 'numpy', 'cv2') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

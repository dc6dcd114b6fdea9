"""vqfr.metrics.evaluation on small synthetic images: worker pools, oversized files, metric requirements."""

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import vqfr.metrics.evaluation as evaluation_module
from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.metrics import EvalOptions, calculate_niqe, calculate_psnr, calculate_ssim, evaluate
from vqfr.metrics.evaluation import read_bgr_uint8


def _folders(tmp_path, size=(32, 32), n=3):
    """gt/ and res/ with ``n`` random images of ``size`` (h, w); res is gt with a seeded offset."""
    rng = np.random.default_rng(0)
    gt, res = tmp_path / "gt", tmp_path / "res"
    gt.mkdir()
    res.mkdir()
    for i in range(n):
        img = rng.integers(0, 200, (*size, 3), dtype=np.uint8)
        cv2.imwrite(str(gt / f"{i}.png"), img)
        cv2.imwrite(str(res / f"{i}.png"), img + rng.integers(0, 40, img.shape, dtype=np.uint8))
    return gt, res


def test_workers_from_a_script_without_main_guard(tmp_path):
    """A plain script (no ``if __name__ == "__main__":``) may ask for worker processes."""
    gt, res = _folders(tmp_path)
    script = tmp_path / "score.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from vqfr.metrics import EvalOptions, evaluate

            print("script body ran")
            ev = evaluate({str(res)!r}, {str(gt)!r}, options=EvalOptions(metrics=("psnr", "ssim")), workers=2)
            print(len(ev.results), ev.problems, ev.notes, ev.mean("psnr"))
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenProcessPool" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "script body ran" and len(lines) == 2  # the script ran once, not once per worker
    expected = np.mean(
        [calculate_psnr(cv2.imread(str(res / f"{i}.png")), cv2.imread(str(gt / f"{i}.png")), 0) for i in range(3)]
    )
    assert lines[1] == f"3 [] [] {expected}"


def _dying_worker(*args):
    import os

    os._exit(3)


def test_a_broken_worker_pool_falls_back_to_this_process(tmp_path, monkeypatch):
    gt, res = _folders(tmp_path)
    if evaluation_module.start_method("cpu") != "fork":
        pytest.skip("the patched initializer only reaches forked workers")
    monkeypatch.setattr(evaluation_module, "_init_worker", _dying_worker)
    ev = evaluate(res, gt, options=EvalOptions(metrics=("psnr",)), workers=2)
    assert len(ev.results) == 3 and ev.problems == []
    assert ev.notes == ["worker processes failed; scored 3 of 3 image(s) in this process instead"]
    ref = evaluate(res, gt, options=EvalOptions(metrics=("psnr",)), workers=1)
    assert [r.values for r in ev.results] == [r.values for r in ref.results]


def test_oversized_image_is_one_clean_line(tmp_path, capsys, truncated_png):
    big = tmp_path / "huge.png"
    big.write_bytes(truncated_png(60000, 60000, 0))  # the header only
    with pytest.raises(VQFRError) as err:
        read_bgr_uint8(big)
    assert str(err.value) == (
        f"cannot read {big}: too large to decode: 60000x60000 pixels (OpenCV's limit is set by CV_IO_MAX_IMAGE_PIXELS)"
    )
    gt, res = _folders(tmp_path, n=2)
    (res / "huge.png").write_bytes(big.read_bytes())
    (gt / "huge.png").write_bytes(big.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's decompression-bomb warning must not escape either
        rc = main(
            [
                "evaluate",
                "--restored",
                str(res),
                "--gt",
                str(gt),
                "--out",
                str(tmp_path / "r"),
                "--metrics",
                "psnr",
                "--workers",
                "1",
            ]
        )
    stderr = capsys.readouterr().err
    assert rc == 1
    assert (
        stderr == f"vqfr evaluate: skipped huge: cannot read {res / 'huge.png'}: too large to decode: 60000x60000 "
        "pixels (OpenCV's limit is set by CV_IO_MAX_IMAGE_PIXELS)\n"
    )


def test_ssim_size_limit_only_applies_when_ssim_is_asked_for(tmp_path):
    gt, res = _folders(tmp_path, size=(1, 1), n=1)
    ev = evaluate(res, gt, options=EvalOptions(metrics=("psnr", "niqe")), workers=1)
    assert ev.problems == [] and list(ev.results[0].values) == ["psnr"]
    assert ev.results[0].warnings[0].startswith("niqe not computed: NIQE needs at least two 96x96 blocks")
    ev = evaluate(res, gt, options=EvalOptions(metrics=("psnr", "ssim")), workers=1)
    assert ev.problems == [("0", "SSIM needs images of at least 11x11 pixels, got 1x1")]


def test_crop_border_that_leaves_nothing_is_rejected_without_warnings(tmp_path):
    gt, res = _folders(tmp_path, size=(128, 128), n=1)
    img = cv2.imread(str(res / "0.png"))
    message = "crop border 100 leaves nothing of a 128x128 image"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would be one
        for metrics in (("psnr",), ("psnr", "ssim", "niqe"), ("niqe",)):
            ev = evaluate(res, gt, options=EvalOptions(metrics=metrics, crop_border=100), workers=1)
            assert ev.problems == [("0", message)] and ev.results == []
        # learned metrics do not crop, so the border does not concern them
        ev = evaluate(res, gt, options=EvalOptions(metrics=("idd_dlib",), crop_border=100), workers=1)
        assert ev.problems == []
        for fn in (calculate_psnr, calculate_ssim):
            with pytest.raises(ValueError, match=message):
                fn(img, img, crop_border=100)
        with pytest.raises(ValueError, match=message):
            calculate_niqe(img, crop_border=100)
    # 63 px at each edge of 128 leaves 2x2: PSNR still works
    assert np.isfinite(calculate_psnr(img, img + 1, crop_border=63))


def test_truncated_png_is_refused_without_libpng_noise(tmp_path, capfd, truncated_png):
    cut = tmp_path / "cut.png"
    cut.write_bytes(truncated_png(200, 200, 10))
    with pytest.raises(VQFRError) as err:
        read_bgr_uint8(cut)
    assert str(err.value) == f"cannot read {cut}: truncated or corrupt (its image data stops after 10 of 200 rows)"
    assert capfd.readouterr().err == ""


def test_evaluate_cli_stderr_holds_only_our_lines(tmp_path, truncated_png):
    gt, res = _folders(tmp_path, n=2)
    (res / "cut.png").write_bytes(truncated_png(32, 32, 3))
    (gt / "cut.png").write_bytes((gt / "0.png").read_bytes())
    good = (res / "1.png").read_bytes()
    (res / "half.png").write_bytes(good[: len(good) - 6])  # last chunk cut short: OpenCV warns about it
    (gt / "half.png").write_bytes(good)
    (res / "new\nline.png").write_bytes(b"not an image")
    (gt / "new\nline.png").write_bytes(good)
    argv = ["evaluate", "--restored", res, "--gt", gt, "--out", tmp_path / "r", "--metrics", "psnr", "--workers", 1]
    root = Path(__file__).resolve().parents[1]  # this checkout's vqfr, whatever the current folder
    proc = subprocess.run([sys.executable, "-m", "vqfr", *map(str, argv)], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("vqfr evaluate: skipped ") for line in lines), lines
    assert "skipped new\\nline: cannot read" in proc.stderr


def test_evaluate_refuses_an_unwritable_out_before_scoring(tmp_path, capsys, monkeypatch):
    import os

    import vqfr.utils.paths as paths_mod

    gt, res = _folders(tmp_path, n=2)
    real_access = os.access
    monkeypatch.setattr(paths_mod.os, "access", lambda p, mode: p != tmp_path and real_access(p, mode))
    monkeypatch.setattr(evaluation_module, "pair_files", lambda *a: pytest.fail("scored before checking --out"))
    rc = main(["evaluate", "--restored", str(res), "--gt", str(gt), "--out", str(tmp_path / "r"), "--workers", "1"])
    assert rc == 2
    assert capsys.readouterr().err == f"vqfr evaluate: error: --out {tmp_path / 'r'}: {tmp_path} is not writable\n"


def test_full_disk_at_the_end_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import vqfr.metrics.report as report_mod

    gt, res = _folders(tmp_path, n=2)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report_mod, "atomic_write_text", full)
    argv = ["evaluate", "--restored", str(res), "--gt", str(gt), "--out", str(tmp_path / "r"), "--metrics", "psnr"]
    assert main([*argv, "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"vqfr evaluate: error: cannot write the reports in {tmp_path / 'r'}: No space left on device\n"
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())

"""Restoration shared by torchrun ranks (2 CPU processes, gloo) and ``--skip-done`` resumption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.io import read_image, write_image
from vqfr.restore import records
from vqfr.restore.batch import shard
from vqfr.restore.pipeline import FaceRestorer

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(os.name != "posix", reason="torchrun tests run on POSIX")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_checkpoint) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_v2.pth", "VQFRv2")


@pytest.fixture
def faces(tmp_path) -> Path:
    """Six aligned faces (random 64x64 crops: no detection needed) and one file that is not an image."""
    folder = tmp_path / "in"
    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(folder / f"f{i}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (folder / "f6.png").write_text("not an image")
    return folder


def _options(tiny: Path) -> list[str]:
    return ["--model", str(tiny), "--aligned", "-s", "0.5", "--device", "cpu", "--precision", "fp32", "-q"]


def _torchrun(cwd: Path, *args, script: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    target = [str(script)] if script else ["-m", "vqfr.restore"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", *target]
    return subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, cwd=cwd, timeout=300)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _comparable(report: dict, outdir: Path) -> dict:
    """``results.json`` without timings, with the output folder's name taken out of the paths."""
    report = json.loads(json.dumps(report).replace(str(outdir), "OUT"))
    report["summary"].pop("seconds")
    for entry in report["inputs"]:
        entry.pop("timings")
    return report


def _same_images(a: Path, b: Path) -> None:
    for name in _files(a):
        if name.endswith(".png"):
            x, y = read_image(a / name).pixels.astype(int), read_image(b / name).pixels.astype(int)
            assert x.shape == y.shape and np.abs(x - y).max() <= 1, name  # processes may round differently


def _input_of(output: str) -> str:
    """The input an output file belongs to: ``cmp/f3_00.png`` -> ``f3.png``."""
    return Path(output).name.split("_")[0].split(".")[0] + ".png"


def _mtimes(folder: Path) -> dict[str, int]:
    return {name: (folder / name).stat().st_mtime_ns for name in _files(folder)}


def test_shards_are_deterministic_round_robin():
    items = list(range(7))
    shares = [shard(items, r, 3) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard(items, 1, 3) == shares[1]  # the same on every call
    assert shard([4], 1, 2) == []  # more ranks than inputs: a rank may get none


@posix_only
def test_two_ranks_write_what_one_process_writes(tiny, faces, tmp_path, lock_holder):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["restore", "-i", str(faces), "-o", str(one), *_options(tiny)]) == 1  # f6 fails

    holder = lock_holder(two)  # another run owns the folder: refused, in one line, by rank 0 alone
    proc = _torchrun(tmp_path, "-i", faces, "-o", two, *_options(tiny))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vqfr restore:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert f"is in use by another run (pid {holder.pid} on " in errors[0]
    holder.communicate("")

    proc = _torchrun(tmp_path, "-i", faces, "-o", two, *_options(tiny))
    assert proc.returncode != 0, proc.stderr[-3000:]  # f6 failed on one rank: the run says so
    assert "vqfr restore:" not in proc.stderr and "f6.png" in proc.stderr, proc.stderr[-3000:]
    assert _files(two) == _files(one)  # and no part files are left behind
    reference = json.loads((one / "results.json").read_text())
    merged = json.loads((two / "results.json").read_text())
    assert _comparable(merged, two) == _comparable(reference, one)  # same records, in input order
    _same_images(one, two)

    # f4's face is lost: --skip-done over the images restores f4 alone, so rank 1 gets no input
    (two / "cmp" / "f4_00.png").unlink()
    before = _mtimes(two)
    proc = _torchrun(tmp_path, "-i", faces / "f[0-5].png", "-o", two, *_options(tiny), "--skip-done")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _mtimes(two)
    changed = {name for name in after if after[name] != before.get(name)}
    f4 = {"restored_imgs/f4.png", *(f"{d}/f4_00.png" for d in ("cmp", "cropped_faces", "restored_faces"))}
    assert changed == f4 | {"results.json"}
    merged = _comparable(json.loads((two / "results.json").read_text()), two)
    assert merged["inputs"] == _comparable(reference, one)["inputs"][:6]
    assert merged["summary"]["reused"] == 5 and merged["summary"]["restored"] == 6


KILLED = """
    import os
    import sys

    from vqfr.cli import main

    replace, placed = os.replace, []


    def dying_replace(src, dst):  # rank 1 is killed while it puts its second input's files in place
        replace(src, dst)
        if os.environ["RANK"] == "1" and os.path.basename(os.path.dirname(dst)) == "restored_imgs":
            placed.append(dst)
            if len(placed) == 2:
                os._exit(137)  # no clean-up at all, as with SIGKILL


    os.replace = dying_replace
    sys.exit(main(["restore", *sys.argv[1:]]))
"""


@posix_only
def test_a_killed_run_resumes_with_skip_done(tiny, faces, tmp_path, monkeypatch):
    out = tmp_path / "out"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    proc = _torchrun(tmp_path, "-i", faces, "-o", out, *_options(tiny), script=script)
    assert proc.returncode != 0
    assert not (out / "results.json").exists()
    parts = sorted((out / records.PARTS).iterdir())
    recorded = {}
    for part in parts:
        lines = [json.loads(line) for line in part.read_text().splitlines()]
        assert "header" in lines[0]
        recorded[part.name] = [Path(e["input"]).name for e in lines[1:]]
    # inputs f0..f6 are dealt round-robin: rank 1 had f1, f3, f5 and finished only f1
    assert recorded["run-0001-rank-00001.jsonl"] == ["f1.png"]
    assert set(recorded.get("run-0001-rank-00000.jsonl", [])) <= {"f0.png", "f2.png", "f4.png", "f6.png"}
    assert (out / "restored_imgs" / "f3.png").exists() and not (out / "cmp" / "f3_00.png").exists()  # half of f3

    done = {name for names in recorded.values() for name in names if name != "f6.png"}
    before = _mtimes(out)
    restored = []
    real_restore = FaceRestorer.restore

    def counting_restore(self, image, **kwargs):
        restored.append(1)
        return real_restore(self, image, **kwargs)

    monkeypatch.setattr(FaceRestorer, "restore", counting_restore)
    # one process resumes what two left: only the inputs without a record are restored
    assert main(["restore", "-i", str(faces), "-o", str(out), *_options(tiny), "--skip-done"]) == 1
    assert len(restored) == 6 - len(done)  # f6 is not an image: it never reaches restore()
    after = _mtimes(out)
    kept = [name for name in before if _input_of(name) in done]
    assert kept and all(after[name] == before[name] for name in kept)  # finished inputs were left alone
    assert records.PARTS not in {p.name for p in out.iterdir()}

    reference = tmp_path / "reference"
    monkeypatch.setattr(FaceRestorer, "restore", real_restore)
    assert main(["restore", "-i", str(faces), "-o", str(reference), *_options(tiny)]) == 1
    expected = _comparable(json.loads((reference / "results.json").read_text()), reference)
    resumed = _comparable(json.loads((out / "results.json").read_text()), out)
    assert resumed == {**expected, "summary": {**expected["summary"], "reused": len(done)}}
    assert _files(out) == _files(reference)
    _same_images(reference, out)


def test_skip_done_in_one_process_and_what_counts_as_done(tiny, faces, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(["restore", "-i", str(faces), "-o", str(out), *_options(tiny)]) == 1
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    (out / "restored_faces" / "f2_00.png").unlink()
    calls = []
    real_restore = FaceRestorer.restore

    def counting_restore(self, image, **kwargs):
        calls.append(1)
        return real_restore(self, image, **kwargs)

    monkeypatch.setattr(FaceRestorer, "restore", counting_restore)
    assert main(["restore", "-i", str(faces), "-o", str(out), *_options(tiny)[:-1], "--skip-done"]) == 1
    assert len(calls) == 1  # f2 again (and f6, which fails before restore)
    assert "7 input(s): 6 restored (6 faces), 0 without faces, 1 failed in" in capsys.readouterr().err
    again = json.loads((out / "results.json").read_text())
    assert again["summary"]["reused"] == 5 and [e["input"] for e in again["inputs"]] == [
        e["input"] for e in first["inputs"]
    ]

    # other output settings: the earlier outputs are not what this run would write
    rc = main(["restore", "-i", str(faces), "-o", str(out), *_options(tiny), "-f", "0.1", "--skip-done"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "fidelity 0.5 vs 0.1 now" in err and "\n" not in err

    # a record whose files sit elsewhere, or is cut short, does not count
    report = json.loads((out / "results.json").read_text())
    report["inputs"][0]["output"] = str(tmp_path / "elsewhere" / "restored_imgs" / "f0.png")
    (out / "results.json").write_text(json.dumps(report))
    part = records.PartWriter(out, records.next_run(out), 0, {k: report[k] for k in ("model", "settings")})
    part.add({**report["inputs"][3], "status": "error"})  # the latest record of f3 says it failed
    part.close()
    with open(part.path, "a") as f:
        f.write('{"input": "half a line')  # what a killed run was writing
    calls.clear()
    assert main(["restore", "-i", str(faces), "-o", str(out), *_options(tiny), "--skip-done"]) == 1
    assert len(calls) == 2  # f0 and f3
    assert not (out / records.PARTS).exists()


def test_part_files_with_other_settings_are_refused(tmp_path):
    model = {"name": "a.pth", "arch": "VQFRv2", "weights": "/x/a.pth"}
    settings = dict.fromkeys(records.SAME_SETTINGS, None)
    (tmp_path / "out").mkdir()
    part = records.PartWriter(tmp_path / "out", 1, 3, {"model": model, "settings": {**settings, "upscale": 2.0}})
    part.add({"input": "in/a.png", "status": "ok"})
    part.close()
    assert part.path.name == "run-0001-rank-00003.jsonl" and records.next_run(tmp_path / "out") == 2
    with pytest.raises(VQFRError, match=r"run-0001-rank-00003.jsonl is from a run with other settings \(upscale"):
        records.earlier_records(tmp_path / "out", model, {**settings, "upscale": 1.0})
    moved = {**model, "weights": "/elsewhere/a.pth"}
    found = records.earlier_records(tmp_path / "out", moved, {**settings, "upscale": 2.0})
    assert list(found) == [os.path.abspath("in/a.png")]  # the same weights file, moved: still the same model
    records.clear_parts(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []

"""What earlier runs into an output folder finished, so that ``--skip-done`` can resume them.

Every process of a run appends one JSON line per input to its own part file,
``OUTDIR/.vqfr-parts/run-NNNN-rank-NNNNN.jsonl``, right after the input's outputs are in place;
each line is written whole and fsynced, so a killed run (even by SIGKILL) keeps what it recorded,
and a line cut short by the kill is ignored. The first line holds the run's model and settings.
At the end ``results.json`` lists every input and the part files are removed.

The latest record of an input wins: ``results.json`` first, then the part files in run order.
Whether a record still describes finished outputs is decided by the batch (it knows the names).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from vqfr.errors import VQFRError
from vqfr.utils.paths import shown

PARTS = ".vqfr-parts"
_PART = re.compile(r"run-(\d+)-rank-(\d+)\.jsonl")

# The settings that decide what an input's outputs are. The device, precision, backend and batch
# size may differ between a run and the run that resumes it (say, on a GPU after a CPU).
SAME_SETTINGS = ("aligned", "upscale", "fidelity", "only_center_face", "face_size", "ext", "suffix")


def _parts(outdir: Path) -> list[tuple[int, int, Path]]:
    folder = outdir / PARTS
    if not folder.is_dir():
        return []
    found = [(int(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := _PART.fullmatch(p.name)) and p.is_file()]
    return sorted(found)


def next_run(outdir: Path) -> int:
    """The number of a new run into ``outdir``: one more than any run with part files there."""
    return max((run for run, _, _ in _parts(outdir)), default=0) + 1


def clear_parts(outdir: Path) -> None:
    """Remove the part files (and their folder, if that leaves it empty)."""
    for _, _, path in _parts(outdir):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(OSError):
        (outdir / PARTS).rmdir()


class PartWriter:
    """Appends this process's records to its part file; each line whole and on disk before ``add`` returns."""

    def __init__(self, outdir: Path, run: int, rank: int, header: dict):
        folder = outdir / PARTS
        folder.mkdir(exist_ok=True)
        self.path = folder / f"run-{run:04d}-rank-{rank:05d}.jsonl"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o666)
        try:
            self._write({"header": header})
        except BaseException:
            self.close()
            raise

    def add(self, entry: dict) -> None:
        self._write(entry)

    def _write(self, record: dict) -> None:
        data = (json.dumps(record) + "\n").encode()
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def earlier_records(outdir: Path, model: dict, settings: dict) -> dict[str, dict]:
    """The latest record of every input (keyed by its absolute path) that earlier runs left in ``outdir``.

    Raises a one-line :class:`VQFRError` when those runs used a different model or settings
    (:data:`SAME_SETTINGS`): their outputs are not what this run would write.
    """
    records: dict[str, dict] = {}
    sources: list[tuple[str, dict, list]] = []
    results = outdir / "results.json"
    try:
        doc = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or not ours: nothing to reuse
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("inputs"), list):
        sources.append(("results.json", doc, doc["inputs"]))
    for _, _, path in _parts(outdir):
        lines = _read_lines(path)
        if lines and isinstance(lines[0].get("header"), dict):
            sources.append((f"{PARTS}/{path.name}", lines[0]["header"], lines[1:]))
    for name, header, entries in sources:
        _check_same(outdir, name, header, model, settings)
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("input"), str):
                records[os.path.abspath(entry["input"])] = entry
    return records


def _read_lines(path: Path) -> list[dict]:
    out = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # the line a killed run was writing
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _check_same(outdir: Path, name: str, header: dict, model: dict, settings: dict) -> None:
    old_model = header.get("model") if isinstance(header.get("model"), dict) else {}
    old_settings = header.get("settings") if isinstance(header.get("settings"), dict) else {}
    diffs = [
        f"{key} {old_model.get(key)} vs {model.get(key)} now"
        for key in ("name", "arch")
        if old_model.get(key) != model.get(key)
    ]
    old_weights, weights = Path(str(old_model.get("weights"))).name, Path(str(model.get("weights"))).name
    if old_weights != weights:
        diffs.append(f"weights {old_weights} vs {weights} now")
    diffs += [
        f"{key} {old_settings.get(key)} vs {settings.get(key)} now"
        for key in SAME_SETTINGS
        if old_settings.get(key) != settings.get(key)
    ]
    if diffs:
        raise VQFRError(
            f"{shown(outdir / name)} is from a run with other settings ({', '.join(diffs)}): to skip its "
            "finished inputs give the same options, or leave out --skip-done to restore every input again"
        )

"""Restore many files into an output folder laid out like the peers' demos.

``OUTDIR/cropped_faces``, ``restored_faces``, ``cmp`` (aligned input | restored, side by side),
``restored_imgs`` and ``results.json``. One bad file never stops the batch; inputs are never
written to, and the output folder may not be (or sit inside) the folder of any input. An input's
output files appear all together or not at all, and ``results.json`` lists exactly those. The
output folder is locked for the run, so two runs cannot mix their outputs.

Under torchrun every process runs the batch with the same inputs: each restores its share
(:func:`shard`), and rank 0 merges the records into one ``results.json``. Each process also
records every input it finished as it goes (:mod:`vqfr.restore.records`), so that a run that was
killed can be resumed with ``skip_done``, restoring only what it had not finished.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np

from vqfr import __version__
from vqfr.errors import VQFRError
from vqfr.io import IMAGE_EXTENSIONS, encode_image, read_image, supports_alpha
from vqfr.restore import records
from vqfr.restore.pipeline import FaceRestorer, RestoreResult
from vqfr.utils.atomic import atomic_write_group, remove_stale_temps
from vqfr.utils.lock import output_folder_lock
from vqfr.utils.paths import blocking_file, shown

if TYPE_CHECKING:
    from vqfr.utils.dist import DistInfo

T = TypeVar("T")

_GLOB_CHARS = set("*?[")

# Restoration also reads GIFs (their first frame; the output is PNG); training and evaluation do not.
INPUT_EXTENSIONS = (*IMAGE_EXTENSIONS, ".gif")
# Formats written to restored_imgs; other inputs (GIF, ...) are saved as PNG with --ext auto.
_WRITABLE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff")


@dataclass
class InputSet:
    """The files to restore and the folder their output names are relative to."""

    files: list[Path]
    root: Path | None  # names are kept relative to this folder (None: bare file names)
    folders: list[Path] = field(default_factory=list)  # folders searched for inputs (folder or glob root)


def collect_inputs(spec: str | os.PathLike, recursive: bool = False) -> InputSet:
    """An image file, a folder (``recursive`` descends into sub-folders) or a glob pattern."""
    text = str(spec)
    path = Path(text).expanduser()
    if any(c in text for c in _GLOB_CHARS) and not path.exists():
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=recursive) if Path(p).is_file())
        root = _glob_root(text)
        if not files:
            raise VQFRError(f"no files match {text!r}")
        return InputSet(files, root, [root])
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in INPUT_EXTENSIONS)
        if not files:
            hint = "" if recursive else " (add --recursive to look in sub-folders)"
            exts = " ".join(INPUT_EXTENSIONS)
            raise VQFRError(f"no images ({exts}) in folder {shown(path)}{hint}")
        return InputSet(files, path, [path])
    if path.is_file():
        return InputSet([path], None, [])
    raise VQFRError(f"input not found: {shown(text)}")


def _glob_root(pattern: str) -> Path | None:
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = []
    for part in parts:
        if any(c in part for c in _GLOB_CHARS):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def check_output_folder(outdir: Path, inputs: InputSet) -> None:
    """Refuse an output folder that is, or is inside, the folder of any input (a folder input, a glob's
    fixed part, or the folder holding an input file): inputs stay untouched, and a later run over
    those folders never takes earlier outputs for inputs. Also refuse a path blocked by a file."""
    out = Path(outdir).expanduser().resolve()
    blocked = blocking_file(out)
    if blocked is not None:
        raise VQFRError(f"output folder {shown(outdir)} cannot be created: {shown(blocked)} is a file")
    for folder in inputs.folders:
        folder = folder.expanduser().resolve()
        if out == folder or folder in out.parents:
            raise VQFRError(
                f"output folder {shown(outdir)} is inside the input folder {shown(folder)}; choose a folder outside it"
            )
    parents: dict[Path, Path] = {}
    for file in inputs.files:
        parents.setdefault(file.resolve().parent, file)
    for parent, file in parents.items():
        if out == parent:
            raise VQFRError(
                f"output folder {shown(outdir)} is the folder of the input {shown(file)}; "
                "choose another folder so inputs stay untouched"
            )
        if parent in out.parents:
            raise VQFRError(
                f"output folder {shown(outdir)} is inside {shown(parent)}, the folder of the input {shown(file)}; "
                "choose a folder outside it"
            )


def check_suffix(suffix: str | None) -> str | None:
    """A ``--suffix`` that can only extend a file name: no path separators, '..', control characters,
    or blank text (None or '' means no suffix)."""
    if suffix is None or suffix == "":
        return None
    if not isinstance(suffix, str):
        raise VQFRError(f"suffix must be text, got {suffix!r}")
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if any(c in suffix for c in separators) or ".." in suffix or not suffix.isprintable() or not suffix.strip():
        raise VQFRError(
            f"suffix {suffix!r} cannot be used in file names: use letters, digits, '-', '_' or '.' "
            "(no path separators, '..', control characters or blanks)"
        )
    return suffix


@dataclass
class BatchOptions:
    aligned: bool = False
    ext: str = "auto"  # auto | png | jpg | ... (restored_imgs only; faces are always PNG)
    suffix: str | None = None
    fidelity: float | None = None
    upscale: float | None = None
    only_center_face: bool | None = None
    save_faces: bool = True


def output_stems(inputs: InputSet) -> dict[Path, str]:
    """Output name (without extension) per input, relative to the input root; clashes get the old extension."""
    stems: dict[Path, str] = {}
    for file in inputs.files:
        rel = (
            file.relative_to(inputs.root)
            if inputs.root is not None and _is_under(file, inputs.root)
            else Path(file.name)
        )
        stems[file] = rel.with_suffix("").as_posix()
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    for file, stem in stems.items():
        if counts[stem.lower()] > 1:
            stems[file] = f"{stem}_{file.suffix.lstrip('.').lower()}"
    return stems


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def run_batch(
    restorer: FaceRestorer,
    inputs: InputSet,
    outdir: str | os.PathLike,
    options: BatchOptions,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    skip_done: bool = False,
    ranks: DistInfo | None = None,
) -> dict:
    """Restore every input file; returns the ``results.json`` document (also written to ``outdir``).

    The output folder is created and locked for the whole run (a second run into it is refused).

    ``skip_done``: inputs that earlier runs into ``outdir`` finished (their latest record says so,
    with the same model and output settings, and every file it lists is still there) are not
    restored again; their records are carried over, so ``results.json`` still lists every input.

    ``ranks``: under torchrun, this process's :class:`~vqfr.utils.dist.DistInfo`. Every rank calls
    ``run_batch`` with the same arguments and holds the folder lock (rank 0 with
    ``output_folder_lock(shared=True)``, the others with ``join_folder_lock``); each restores its
    :func:`shard` of the inputs still to do, and rank 0 writes ``results.json`` for all of them.
    Rank 0 gets the whole document, the other ranks all of it but the ``inputs`` list.
    """
    outdir = Path(outdir).expanduser()
    check_output_folder(outdir, inputs)
    check_suffix(options.suffix)
    with output_folder_lock(outdir, "vqfr restore"):
        return _run_locked(restorer, inputs, outdir, options, progress, log, skip_done, ranks)


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """The share of rank ``rank`` out of ``world``: items ``rank``, ``rank + world``, ... (in order).

    The same list gives every rank the same share on every run, and the shares differ by at most one.
    """
    return list(items[rank::world])


def _run_locked(
    restorer, inputs: InputSet, outdir: Path, options: BatchOptions, progress: bool, log, skip_done: bool, ranks
) -> dict:
    from tqdm import tqdm

    rank, world = (ranks.rank, ranks.world_size) if ranks is not None else (0, 1)

    def together(step: Callable[[], T], main_only: bool) -> T:
        if world == 1:
            return step()
        from vqfr.utils.dist import together as on_every_rank

        return on_every_rank(step, ranks, main_only)

    stems = output_stems(inputs)
    input_set = {f.resolve() for f in inputs.files}
    report = {
        "vqfr_version": __version__,
        "model": {
            "name": restorer.model_name,
            "arch": restorer.arch,
            "weights": str(restorer.weights_path),
            "face_size": restorer.face_size,
            "why": restorer.model_reason,
        },
        "settings": {
            "aligned": options.aligned,
            "upscale": options.upscale if options.upscale is not None else restorer.upscale,
            "fidelity": options.fidelity if options.fidelity is not None else restorer.fidelity,
            "only_center_face": bool(
                options.only_center_face if options.only_center_face is not None else restorer.only_center_face
            ),
            "device": str(restorer.device),
            "precision": restorer.precision,
            "backend": restorer.backend,
            "batch_size": restorer.batch_size,
            "face_size": restorer.face_size,
            "ext": options.ext,
            "suffix": options.suffix,
        },
        "inputs": [],
        "summary": {},
    }
    started = time.perf_counter()
    say = log or (lambda msg: None)
    reused: dict[int, dict] = {}  # on rank 0: input index -> record carried over from an earlier run

    def plan() -> tuple[int, list[int]]:
        if skip_done:
            reused.update(_finished_earlier(inputs, stems, outdir, options, report))
            remove_stale_temps(outdir)  # what a killed run was writing
        else:
            records.clear_parts(outdir)  # a fresh run: what earlier runs recorded is no longer the plan
        return records.next_run(outdir), [i for i in range(len(inputs.files)) if i not in reused]

    run, todo = together(plan, main_only=True)  # rank 0 alone reads the folder, so all ranks agree
    mine = shard(todo, rank, world)
    header = {k: report[k] for k in ("vqfr_version", "model", "settings")}
    try:
        part: records.PartWriter | None = records.PartWriter(outdir, run, rank, header)
    except OSError as err:
        part = None
        say(f"note: cannot record progress in {shown(outdir / records.PARTS)} ({err.strerror or err}); {_REDO}")
    done: dict[int, dict] = {}
    bar = tqdm(mine, unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        for i in bar:
            file = inputs.files[i]
            bar.set_postfix_str(shown(file.name)[-30:], refresh=False)
            entry = _restore_one(restorer, file, stems[file], outdir, options, input_set)
            done[i] = entry
            if part is not None:
                try:
                    part.add(entry)
                except OSError as err:
                    part.close()
                    part = None
                    (bar.write if progress else say)(
                        f"note: cannot record progress in {shown(outdir / records.PARTS)} ({err.strerror or err}); "
                        + _REDO
                    )
            if entry["status"] == "error":
                (bar.write if progress else say)(f"error: {entry['error']}")
    finally:
        bar.close()
        if part is not None:
            part.close()
        if world == 1:  # also after an error or Ctrl-C: results.json lists what was finished
            _write_results(report, inputs, reused, done, str(restorer.device), time.perf_counter() - started, outdir)
    if world == 1:
        return report
    from vqfr.utils.dist import gather_on_main

    gathered = gather_on_main((str(restorer.device), done), ranks)

    def merge() -> dict:
        devices = sorted({device for device, _ in gathered}, key=lambda d: (len(d), d))
        everything = {i: entry for _, entries in gathered for i, entry in entries.items()}
        _write_results(report, inputs, reused, everything, ", ".join(devices), time.perf_counter() - started, outdir)
        return {k: v for k, v in report.items() if k != "inputs"}

    summary_only = together(merge, main_only=True)
    return report if rank == 0 else summary_only


_REDO = "if this run is killed, a rerun with --skip-done restores the inputs it finished again"


def _write_results(report, inputs, reused, done, device, seconds, outdir) -> None:
    """Fill in and write ``results.json``: this run's records and the reused ones, in input order."""
    from vqfr.utils.atomic import atomic_write_text

    report["settings"]["device"] = device
    listed = (done.get(i, reused.get(i)) for i in range(len(inputs.files)))
    report["inputs"] = [entry for entry in listed if entry is not None]
    report["summary"] = _summary(report["inputs"], len(inputs.files), seconds, reused=len(reused))
    path = outdir / "results.json"
    try:
        atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    except OSError as err:
        raise VQFRError(
            f"cannot write {shown(path)} ({err.strerror or err}); the files restored so far are not listed"
        ) from None
    records.clear_parts(outdir)  # results.json holds every record now


def _finished_earlier(inputs: InputSet, stems: dict, outdir: Path, options: BatchOptions, report: dict) -> dict:
    """Input index -> the record (with this run's spelling of the paths) of inputs done by earlier runs."""
    earlier = records.earlier_records(outdir, report["model"], report["settings"])
    reused = {}
    for i, file in enumerate(inputs.files):
        record = earlier.get(os.path.abspath(file))
        if record is not None:
            record = _still_there(record, file, stems[file], outdir, options)
            if record is not None:
                reused[i] = record
    return reused


def _still_there(record: dict, file: Path, stem: str, outdir: Path, options: BatchOptions) -> dict | None:
    """``record`` rebased on ``outdir`` if it says the input was restored and all its files are where
    this run would write them; else None (the input is restored again)."""
    if record.get("status") not in ("ok", "no_face") or not isinstance(record.get("output"), str):
        return None
    root = Path(os.path.abspath(outdir))
    suffix = f"_{options.suffix}" if options.suffix else ""
    try:
        rel = Path(os.path.abspath(record["output"])).relative_to(root)
    except ValueError:
        return None
    output = outdir / rel
    if rel.with_suffix("").as_posix() != f"restored_imgs/{stem}{suffix}" or not output.is_file():
        return None
    faces = []
    for face in record.get("faces") or []:
        if not isinstance(face, dict) or not isinstance(face.get("index"), int):
            return None
        paths = _face_paths(outdir, stem, face["index"], suffix)
        if options.save_faces:
            for key, path in paths.items():
                given = face.get(key)
                if not isinstance(given, str) or os.path.abspath(given) != os.path.abspath(path):
                    return None
                if not path.is_file():
                    return None
            face = {**face, **{k: str(v) for k, v in paths.items()}}
        faces.append(face)
    return {**record, "input": str(file), "output": str(output), "faces": faces}


def _summary(entries: list[dict], planned: int, seconds: float, reused: int = 0) -> dict:
    count = {s: sum(e["status"] == s for e in entries) for s in ("ok", "no_face", "error")}
    return {
        "inputs": planned,
        "processed": len(entries),
        "reused": reused,
        "restored": count["ok"],
        "no_face": count["no_face"],
        "failed": count["error"],
        "faces": sum(len(e["faces"]) for e in entries),
        "skipped_faces": sum(len(e["skipped_faces"]) for e in entries),
        "seconds": round(seconds, 3),
        "failures": [{"input": e["input"], "error": e["error"]} for e in entries if e["status"] == "error"],
    }


def _restore_one(restorer, file: Path, stem: str, outdir: Path, options: BatchOptions, input_set: set) -> dict:
    entry: dict = {
        "input": str(file),
        "status": "error",
        "error": None,
        "size": None,
        "output": None,
        "output_size": None,
        "faces": [],
        "skipped_faces": [],
        "notes": [],
        "timings": {},
    }
    try:
        t = time.perf_counter()
        loaded = read_image(file, max_pixels=restorer.max_pixels)
        read_s = time.perf_counter() - t
        entry["size"] = list(loaded.size)
        if loaded.format == "GIF":
            entry["notes"].append(_gif_note(file))
        result = restorer.restore(
            loaded,
            aligned=options.aligned,
            fidelity=options.fidelity,
            upscale=options.upscale,
            only_center_face=options.only_center_face,
        )
        t = time.perf_counter()
        _save(result, file, stem, outdir, options, entry, input_set, gray=loaded.is_gray)
        entry["timings"] = {"read": round(read_s, 4), **result.timings, "write": round(time.perf_counter() - t, 4)}
        entry["skipped_faces"] = result.skipped
        entry["notes"] += result.notes
        entry["status"] = "ok" if result.faces else "no_face"
    except VQFRError as err:
        entry["error"] = _one_line(str(err), file, stem)
    except MemoryError:
        entry["error"] = f"{shown(file)}: out of memory (try a smaller --upscale or image)"
    except Exception as err:  # an unexpected failure on one file must not end the batch
        entry["error"] = _one_line(f"{type(err).__name__}: {err}", file, stem)
    return entry


def _gif_note(file: Path) -> str:
    from PIL import Image

    try:
        with Image.open(file) as im:
            frames = int(getattr(im, "n_frames", 1))
    except Exception:  # the frame count is only for the note; read_image already decoded the file
        frames = 1
    which = f"the first of its {frames} frames" if frames > 1 else "its single frame"
    return f"GIF input: {which} was restored; GIF is not written, so the output is PNG (--ext auto)"


def _one_line(msg: str, file: Path, stem: str) -> str:
    """One printable line that names the input: unprintable names are quoted, other line breaks joined."""
    for raw in (str(file), stem):
        if not raw.isprintable():
            msg = msg.replace(raw, shown(raw))
    msg = " ".join(msg.split())
    return msg if shown(file) in msg else f"{shown(file)}: {msg}"


def _save(result: RestoreResult, file, stem, outdir, options, entry, input_set, gray: bool) -> None:
    """Encode every output of one input, then write them as a group: all of them appear, or none."""
    suffix = f"_{options.suffix}" if options.suffix else ""
    if options.ext == "auto":
        ext = file.suffix.lower().lstrip(".")
        if ext not in _WRITABLE_EXTENSIONS:
            ext = "png"  # GIF and other read-only formats
    else:
        ext = options.ext.lower().lstrip(".")
    image = result.image
    has_alpha = image.ndim == 3 and image.shape[2] == 4
    if has_alpha and not supports_alpha(f"x.{ext}"):
        if options.ext == "auto":
            ext = "png"
            entry["notes"].append("saved as PNG to keep the alpha channel")
        else:
            entry["notes"].append(f"alpha channel dropped: {ext.upper()} cannot store it")
    if image.dtype == np.uint16 and ext not in ("png", "tif", "tiff"):
        entry["notes"].append(f"saved in 8 bit: {ext.upper()} cannot store 16-bit pixels")
    out_path = outdir / "restored_imgs" / f"{stem}{suffix}.{ext}"
    files = [(out_path, encode_image(out_path, image))]
    faces = []
    if options.save_faces:
        for face in result.faces:
            crop, restored = face.cropped, face.restored
            if gray:
                crop, restored = _gray(crop), _gray(restored)
            paths = _face_paths(outdir, stem, face.index, suffix)
            images = {"cropped": crop, "restored": restored, "cmp": np.concatenate([crop, restored], axis=1)}
            files += [(paths[k], encode_image(paths[k], images[k])) for k in paths]
            faces.append({**face.to_dict(), **{k: str(v) for k, v in paths.items()}})
    else:
        faces = [face.to_dict() for face in result.faces]
    for path, _ in files:
        _guard(path, input_set, outdir)
    try:
        atomic_write_group(files)
    except OSError as err:
        why = err.strerror or str(err)
        raise VQFRError(f"{shown(file)}: cannot write its outputs in {shown(outdir)} ({why}); none were kept") from None
    entry["output"] = str(out_path)
    entry["output_size"] = [image.shape[1], image.shape[0]]
    entry["faces"] = faces


def _face_paths(outdir: Path, stem: str, index: int, suffix: str) -> dict[str, Path]:
    """Where face ``index`` of the input named ``stem`` goes (``suffix``: "" or "_TEXT")."""
    return {
        "cropped": outdir / "cropped_faces" / f"{stem}_{index:02d}.png",
        "restored": outdir / "restored_faces" / f"{stem}_{index:02d}{suffix}.png",
        "cmp": outdir / "cmp" / f"{stem}_{index:02d}.png",
    }


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _guard(path: Path, input_set: set, outdir: Path) -> None:
    resolved = path.resolve()
    if resolved in input_set:
        raise VQFRError(f"refusing to overwrite the input file {shown(path)}")
    if outdir.resolve() not in resolved.parents:
        raise VQFRError(f"refusing to write {shown(path)}: it is outside the output folder {shown(outdir)}")

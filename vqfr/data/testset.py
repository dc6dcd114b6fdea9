"""Turn a folder of HQ faces into a paired LQ/GT test set with a fixed seed (like CelebA-Test)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from vqfr.errors import VQFRError
from vqfr.utils.atomic import atomic_write_text
from vqfr.utils.paths import unwritable_reason

from .degradations import DegradationConfig, degrade, sample_rng
from .images import list_image_files, read_rgb_float, resize_square_float, write_png


@dataclass
class TestSetReport:
    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def make_paired_testset(
    hq_root: str | os.PathLike,
    out_root: str | os.PathLike,
    degradation: DegradationConfig | None = None,
    seed: int = 0,
    size: int | None = 512,
    overwrite: bool = False,
    progress=None,
) -> TestSetReport:
    """Write ``out/gt/NAME.png`` (resized HQ) and ``out/lq/NAME.png`` (degraded) for each HQ face.

    Image ``NAME`` is degraded with the generator ``(seed, i)`` where ``i`` is its position in
    the sorted listing, so the set is reproducible. ``out/degradations.json`` records the seed,
    the config and the parameters drawn for every image. One unreadable file is reported in
    ``failed`` and does not stop the others. ``size=None`` keeps each image's own size.
    Pairs already in ``out_root`` are skipped (redone with ``overwrite``); an existing set made
    with another seed, size or degradation is refused unless ``overwrite``.
    """
    hq_root, out_root = Path(hq_root), Path(out_root)
    files = list_image_files(hq_root)
    if out_root.resolve() == hq_root.resolve() or hq_root.resolve() in out_root.resolve().parents:
        raise VQFRError("the output folder must not be inside the HQ input folder")
    problem = unwritable_reason(out_root)
    if problem is not None:
        raise VQFRError(f"cannot write the test set to {out_root}: {problem}")
    cfg = degradation or DegradationConfig()
    meta_path = out_root / "degradations.json"
    options = {"seed": int(seed), "size": size, "degradation": cfg.to_dict()}
    old_records = _existing_records(meta_path, options, strict=not overwrite)
    report = TestSetReport()
    records = {}
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(str(path.relative_to(hq_root).with_suffix("")), []).append(path)
    for i, path in enumerate(progress(files) if progress else files):
        name = str(path.relative_to(hq_root).with_suffix(""))
        if len(by_name[name]) > 1:  # face.jpg and face.png would both become face.png
            others = ", ".join(p.name for p in by_name[name] if p != path)
            report.failed[str(path.relative_to(hq_root))] = f"same output name {name}.png as {others}; rename one"
            continue
        gt_path, lq_path = out_root / "gt" / f"{name}.png", out_root / "lq" / f"{name}.png"
        if not overwrite and gt_path.exists() and lq_path.exists():
            report.skipped.append(name)
            continue
        wrote_gt = False
        try:
            gt = read_rgb_float(path)
            if size is not None:
                gt = resize_square_float(gt, int(size))
            lq, params = degrade(gt, cfg, sample_rng(seed, i), return_params=True)
            write_png(gt_path, gt)
            wrote_gt = True
            write_png(lq_path, lq)
        except (VQFRError, OSError) as err:
            if wrote_gt:  # no GT without its LQ: a pair appears whole or not at all
                gt_path.unlink(missing_ok=True)
            report.failed[name] = str(err) if isinstance(err, VQFRError) else f"{err.strerror or err}"
            continue
        records[name] = params
        report.written.append(name)
    meta = {**options, "images": {**old_records, **records}}  # keep the records of images skipped on a re-run
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    except OSError as err:
        raise VQFRError(f"cannot write {meta_path}: {err.strerror or err}") from None
    return report


def _existing_records(meta_path: Path, options: dict, strict: bool = True) -> dict:
    """The per-image records of an existing test set made with the same ``options``.

    Skipping existing pairs is only honest when they were made with the same seed, size and
    degradation ranges; otherwise ``degradations.json`` would describe images it did not make.
    A different or unreadable record is an error when ``strict``, else dropped (overwrite).
    """
    if not meta_path.exists():
        return {}
    hint = "use --overwrite (overwrite=True) or a new output folder"
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or not isinstance(old.get("images", {}), dict):
        if not strict:
            return {}
        raise VQFRError(f"cannot read {meta_path} as a degradations record; {hint}")
    current = json.loads(json.dumps(options))  # tuples -> lists, as stored
    changed = [key for key in ("seed", "size", "degradation") if old.get(key) != current[key]]
    if changed:
        if not strict:
            return {}
        raise VQFRError(f"{meta_path.parent} holds a test set made with a different {'/'.join(changed)}; {hint}")
    return old.get("images", {})

"""``vqfr evaluate``: PSNR/SSIM/LPIPS/NIQE/FID/identity/landmark metrics over a folder, with reports."""

from __future__ import annotations

import argparse
import os
import sys

from vqfr.metrics.table import METRICS, NO_GT_DEFAULT, weight_files, weight_key


def _metric_list(text: str) -> tuple[str, ...]:
    names = tuple(m.strip().lower() for m in text.replace(" ", ",").split(",") if m.strip())
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown metric {bad[0] if bad else text!r}; choose from {','.join(METRICS)}")
    return names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score restored faces (PSNR, SSIM, LPIPS, NIQE, FID, identity, landmarks) and write reports",
        description="Pair restored images with ground truth by file name, compute metrics in parallel, print a "
        "table and write metrics.csv, metrics.json and report.html. PSNR/SSIM/NIQE match BasicSR 1.4.2.",
    )
    p.add_argument("--restored", required=True, metavar="DIR", help="folder of restored images")
    p.add_argument("--gt", metavar="DIR", help="folder of ground-truth images (same file stems)")
    p.add_argument("--lq", metavar="DIR", help="folder of degraded inputs, only shown in the HTML report")
    p.add_argument(
        "--metrics",
        type=_metric_list,
        metavar="LIST",
        help=f"comma-separated subset of {','.join(METRICS)} "
        f"(default: all with --gt, else {','.join(NO_GT_DEFAULT)})",
    )
    p.add_argument("--out", metavar="DIR", help="report folder (default: <restored>_eval next to --restored)")
    p.add_argument(
        "--crop-border",
        type=int,
        default=0,
        metavar="N",
        help="pixels ignored at each edge by PSNR, SSIM and NIQE (default: %(default)s)",
    )
    p.add_argument("--test-y-channel", action="store_true", help="PSNR/SSIM on the MATLAB Y channel instead of BGR")
    p.add_argument(
        "--correct-mean-var",
        action="store_true",
        help="match each channel's mean/std of the restored image to the GT before PSNR/SSIM "
        "(what the VQFR paper's calculate_psnr_ssim.py does)",
    )
    for spec in weight_files():
        name = "" if spec.filename in spec.description else f" ({spec.filename})"
        p.add_argument(spec.option, metavar="PATH", help=f"{spec.description}{name}")
    p.add_argument(
        "--fid-stats",
        metavar="PATH",
        help="reference statistics (.pth with mean/cov, e.g. inception_FFHQ_512-f7b384ab.pth, or .npz mu/sigma); "
        "default: the --gt images",
    )
    p.add_argument("--save-fid-stats", metavar="PATH", help="also write the restored set's FID statistics (.npz)")
    p.add_argument(
        "--download-weights",
        action="store_true",
        help="download the publicly hosted weight files that are missing into the cache "
        "($VQFR_HOME/metrics, default ~/.cache/vqfr/metrics) before evaluating (needs internet)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help="worker processes; 1 = in this process (default: min(4, CPUs) = %(default)s here)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the learned metrics (default: %(default)s)")
    p.add_argument(
        "--sort-by",
        choices=tuple(METRICS),
        metavar="METRIC",
        help="per-image metric, one of those computed, that picks the best/worst images in report.html "
        "(default: psnr, else niqe)",
    )
    p.add_argument(
        "--cases",
        type=int,
        default=5,
        metavar="N",
        help="how many best and how many worst images report.html shows (default: %(default)s)",
    )
    p.set_defaults(func=run)


def _check_metric_choice(metrics: tuple[str, ...], args: argparse.Namespace) -> None:
    """Refuse what cannot be done as asked: full-reference metrics without --gt, a --sort-by not computed."""
    from vqfr.errors import VQFRError

    if not args.gt:
        need_gt = [m for m in metrics if METRICS[m].needs_gt]
        if need_gt:
            raise VQFRError(
                f"{','.join(need_gt)} compare with ground truth: give --gt DIR, "
                f"or choose from {','.join(NO_GT_DEFAULT)} without it"
            )
    if args.sort_by is not None:
        per_image = [m for m in metrics if METRICS[m].per_image]  # FID is one number for the whole set
        if args.sort_by not in per_image:
            raise VQFRError(
                f"--sort-by {args.sort_by}: not a per-image metric of this run "
                f"(choose from {','.join(per_image) or 'none'})"
            )


def _check_outputs(out_dir, fid_stats: str | None) -> None:
    """Fail before any work when an output path cannot be written (a file in the way, no permission)."""
    from pathlib import Path

    from vqfr.errors import VQFRError
    from vqfr.utils.paths import unwritable_reason

    problem = unwritable_reason(out_dir)
    if problem is not None:
        raise VQFRError(f"--out {out_dir}: {problem}")
    if fid_stats is not None:
        path = Path(fid_stats)
        if path.is_dir():
            raise VQFRError(f"--save-fid-stats {path}: is a folder, expected a file name (.npz)")
        problem = unwritable_reason(path.parent)
        if problem is not None:
            raise VQFRError(f"--save-fid-stats {path}: {problem}")


def _download_missing(args: argparse.Namespace, metrics: tuple[str, ...]) -> None:
    """Fetch the missing weight files of ``metrics`` that have a public URL (the others stay n/a)."""
    from vqfr.utils.known_files import fetch

    for spec in weight_files():
        wanted = any(spec in METRICS[m].weights for m in metrics)
        if wanted and spec.url is not None and getattr(args, weight_key(spec)) is None:
            print(f"downloading {spec.filename} ...", file=sys.stderr)
            setattr(args, weight_key(spec), str(fetch(spec)))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from vqfr.errors import VQFRError, one_line
    from vqfr.metrics.evaluation import EvalOptions, evaluate
    from vqfr.metrics.report import format_table, write_reports
    from vqfr.utils.device import select_device

    if args.workers < 1:
        raise VQFRError(f"--workers must be >= 1, got {args.workers}")
    if args.cases < 1:
        raise VQFRError(f"--cases must be >= 1, got {args.cases}")
    device = select_device(args.device)  # an unavailable device fails here, before any work
    restored = Path(args.restored)
    metrics = args.metrics or (tuple(METRICS) if args.gt else NO_GT_DEFAULT)
    _check_metric_choice(metrics, args)
    out_dir = Path(args.out) if args.out else restored.resolve().parent / f"{restored.resolve().name}_eval"
    _check_outputs(out_dir, args.save_fid_stats)
    if args.download_weights:
        _download_missing(args, metrics)
    options = EvalOptions(
        metrics=metrics,
        crop_border=args.crop_border,
        test_y_channel=args.test_y_channel,
        correct_mean_var=args.correct_mean_var,
        weights={weight_key(spec): getattr(args, weight_key(spec)) for spec in weight_files()},
        fid_stats=args.fid_stats,
        device=str(device),
        fid_features=bool(args.save_fid_stats),
    )
    bar = tqdm(desc="evaluate", unit="img", disable=not sys.stderr.isatty(), file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        ev = evaluate(restored, args.gt, args.lq, options, workers=args.workers, progress=progress)
    finally:
        bar.close()

    for name, reason in ev.problems:
        print(f"vqfr evaluate: skipped {one_line(name)}: {one_line(reason)}", file=sys.stderr)
    for note in ev.notes:
        print(f"vqfr evaluate: note: {one_line(note)}", file=sys.stderr)
    for r in ev.results:
        for warning in r.warnings:
            print(f"vqfr evaluate: warning: {one_line(r.pair.name)}: {one_line(warning)}", file=sys.stderr)
    print(format_table(ev))
    if not ev.results:
        raise VQFRError("no image could be evaluated (see the messages above)")

    # Checked writable up front; a disk that fills up meanwhile is still one line (each file is atomic).
    try:
        paths = write_reports(ev, out_dir, sort_by=args.sort_by, cases=args.cases)
    except OSError as err:
        raise VQFRError(f"cannot write the reports in {out_dir}: {err.strerror or err}") from None
    if args.save_fid_stats:
        try:
            _save_fid_stats(ev, args.save_fid_stats)
        except OSError as err:
            raise VQFRError(f"cannot write {args.save_fid_stats}: {err.strerror or err}") from None
    print(f"reports: {paths['csv']}, {paths['json']}, {paths['html']}")
    return 1 if ev.problems else 0


def _save_fid_stats(ev, path: str) -> None:
    import numpy as np

    from vqfr.errors import VQFRError
    from vqfr.metrics.fid import feature_stats, save_stats

    feats = [r.fid_features["restored"] for r in ev.results if "restored" in r.fid_features]
    if len(feats) < 2:
        raise VQFRError("--save-fid-stats needs FID features of at least 2 images (is --fid-weights set?)")
    save_stats(path, *feature_stats(np.stack(feats)))
    print(f"FID statistics of {len(feats)} images: {path}")

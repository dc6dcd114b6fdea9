"""``vqfr degrade``: make a paired LQ/GT test set from a folder of HQ faces with a fixed seed."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "degrade",
        help="turn a folder of HQ faces into a paired LQ/GT test set (fixed seed, like CelebA-Test)",
        description="Writes OUT/gt/NAME.png, OUT/lq/NAME.png and OUT/degradations.json. The same seed "
        "always gives the same set. Ranges default to the VQFRv2 training recipe.",
    )
    p.add_argument("input", help="folder of high-quality face images (searched recursively)")
    p.add_argument("output", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=512, help="resize faces to SIZE x SIZE first (0: keep size)")
    p.add_argument("--config", help="YAML file with degradation options (the data.train.degradation block)")
    p.add_argument("--blur-sigma", type=float, nargs=2, metavar=("LO", "HI"), help="default 1 15")
    p.add_argument("--downsample", type=float, nargs=2, metavar=("LO", "HI"), help="default 1 30")
    p.add_argument("--noise", type=float, nargs=2, metavar=("LO", "HI"), help="default 0 20 (0-255 scale)")
    p.add_argument("--jpeg", type=int, nargs=2, metavar=("LO", "HI"), help="default 30 90")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import yaml
    from tqdm import tqdm

    from vqfr.data import DegradationConfig, make_paired_testset
    from vqfr.errors import VQFRError, one_line

    opts: dict = {}
    if args.config:
        try:
            loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise VQFRError(f"cannot read degradation config {args.config}: {type(err).__name__}") from None
        if isinstance(loaded, dict) and "data" in loaded:  # a whole training config
            train = loaded["data"].get("train") if isinstance(loaded["data"], dict) else None
            loaded = train.get("degradation") if isinstance(train, dict) else None
            if loaded is None:
                raise VQFRError(f"{args.config} has no degradation settings (no data.train.degradation block)")
        if not isinstance(loaded, dict):
            raise VQFRError(f"{args.config} must hold a mapping of degradation options")
        if not loaded:
            raise VQFRError(f"{args.config} has no degradation settings")
        opts.update(loaded)
    for flag, key in (
        ("blur_sigma", "blur_sigma"),
        ("downsample", "downsample_range"),
        ("noise", "noise_range"),
        ("jpeg", "jpeg_range"),
    ):
        if getattr(args, flag) is not None:
            opts[key] = list(getattr(args, flag))
    cfg = DegradationConfig.from_dict(opts)
    if args.size < 0:
        raise VQFRError("--size must be >= 0")
    report = make_paired_testset(
        args.input,
        args.output,
        cfg,
        seed=args.seed,
        size=args.size or None,
        overwrite=args.overwrite,
        progress=lambda xs: tqdm(xs, desc="degrade", unit="img"),
    )
    for name, why in report.failed.items():
        print(f"vqfr degrade: skipped {one_line(name)}: {one_line(why)}", file=sys.stderr)
    print(
        f"wrote {len(report.written)} pairs to {args.output} (seed {args.seed})"
        + (f", {len(report.skipped)} already present" if report.skipped else "")
        + (f", {len(report.failed)} failed" if report.failed else "")
    )
    return 1 if report.failed else 0  # like restore and evaluate: any image that failed is a failure

"""``vqfr train``: train the codebook (stage 1) or the restoration network (stage 2) from a YAML config.

One process: ``vqfr train -c configs/vqfr_v2_ffhq512.yml``. Several GPUs or nodes:
``torchrun --nproc_per_node 8 -m vqfr.train -c configs/vqfr_v2_ffhq512.yml`` (same options).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a VQGAN codebook or a VQFR restoration network (DDP under torchrun)",
        description="Train from a YAML config (see configs/ and docs/train.md). Under torchrun every "
        "process runs this same command.",
    )
    p.add_argument("-c", "--config", required=True, help="training config (YAML)")
    p.add_argument("--out", help="output folder (default: experiments/<config name>)")
    p.add_argument(
        "--resume",
        metavar="PATH|auto",
        help="continue from a training checkpoint (step_*.pt), a run folder, or 'auto' (the newest in --out)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="save and stop after this step (resume later)")
    p.add_argument(
        "-o",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. -o data.train.root=/data/ffhq_512.lmdb (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to train.log)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vqfr.train.config import load_config
    from vqfr.train.trainer import run_training

    cfg = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("experiments") / (cfg["name"] or Path(args.config).stem)
    summary = run_training(
        cfg, out, resume=args.resume, device=args.device, stop_at=args.stop_at, progress=not args.no_progress
    )
    if summary["stopped_by"]:
        return 130 if summary["stopped_by"] == "SIGINT" else 143
    return 0

#!/usr/bin/env bash
# The VQFR-lite quality table (docs/models.md): degrade the held-out people CelebA-Test-style,
# restore them at fidelity 0, 0.5 and 1, and score every result and the degraded input itself.
#   bash benchmarks/eval_lite.sh [MODEL] [WORK]
# MODEL: a zoo name or checkpoint (default VQFR_lite); WORK: a scratch folder (default ../runs/eval_lite).
# Needs ../shared/data/faces_hq; run from the repository root.
set -euo pipefail
MODEL=${1:-VQFR_lite}
WORK=${2:-../runs/eval_lite}
HQ=${HQ:-../shared/data/faces_hq/train}
METRICS=psnr,ssim,niqe,idd_dlib,lmd_dlib
# The held-out people are the config's own validation patterns (data.val.include), linked here.
python3 - "$HQ" "$WORK/val_hq" <<'PY'
import os, sys
from pathlib import Path
from vqfr.data import ImageSource
from vqfr.train.config import load_config
include = load_config("configs/lite_vqfr_v2.yml")["data"]["val"]["include"]
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for file in ImageSource(sys.argv[1], include=include).files:
    if not (out / file.name).exists():
        os.symlink(file.resolve(), out / file.name)
PY
[ -d "$WORK/test/lq" ] || vqfr degrade "$WORK/val_hq" "$WORK/test" --seed 0 \
  --blur-sigma 0.1 10 --downsample 0.8 8 --noise 0 20 --jpeg 60 100
[ -f "$WORK/eval_input/metrics.json" ] || vqfr evaluate --restored "$WORK/test/lq" --gt "$WORK/test/gt" \
  --metrics "$METRICS" --workers 1 --out "$WORK/eval_input" > "$WORK/eval_input.txt"
for F in 0 0.5 1; do
  rm -rf "$WORK/restored_$F" "$WORK/eval_$F"
  vqfr restore -i "$WORK/test/lq" -o "$WORK/restored_$F" --aligned -s 1 --model "$MODEL" --fidelity "$F" -q
  vqfr evaluate --restored "$WORK/restored_$F/restored_imgs" --gt "$WORK/test/gt" --metrics "$METRICS" --workers 1 \
    --out "$WORK/eval_$F" > "$WORK/eval_$F.txt"
done
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
rows = [("input", "eval_input")] + [(f"fidelity {f}", f"eval_{f}") for f in ("0", "0.5", "1")]
print("| | PSNR | SSIM | NIQE | IDD (dlib, deg) | LMD (dlib, px) |")
print("|---|---|---|---|---|---|")
for name, folder in rows:
    m = {k: v["mean"] for k, v in json.load(open(f"{work}/{folder}/metrics.json"))["summary"].items()}
    print(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['niqe']:.3f} | {m['idd_dlib']:.2f} | {m['lmd_dlib']:.2f} |")
PY

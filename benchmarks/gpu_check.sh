#!/usr/bin/env bash
# The GPU check (issue: runtime), for a machine with a CUDA GPU; a few minutes at most.
# Runs gpu_check.py with the machine's own python3 and CUDA torch, vqfr taken from this checkout
# (it needs only torch, numpy, opencv, scipy, pyyaml and pillow: no install step, so it also runs
# on a lent GPU machine that reaches no package index): CUDA vs CPU fp32 (1e-4), bf16/fp16 codes
# unchanged, ms per face at batch 1/8/32, peak memory.
#   bash benchmarks/gpu_check.sh            # from anywhere
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py "$@"

#!/usr/bin/env bash
# The H100 throughput sweep in one command, on a bare GPU machine (torch + CUDA + Python, no index):
#
#   util/fetch_gpu_wheels.sh              # once, on a machine with PyPI: the missing wheels into .whl/
#   benchmarks/gpu_sweep.sh               # on the GPU machine, from the checkout (with .whl/): ~8 minutes
#   benchmarks/gpu_sweep.sh --smoke       # the same path on CPU in about a minute (what CI checks)
#
# Writes $OUT/sweep.jsonl (one JSON line per run, then the best per flavor with "best": true),
# $OUT/sweep.log (progress and a Markdown table for the README), $OUT/env.txt (GPU, versions) and
# $OUT/runs/<run>/train.log (each run's training log). OUT defaults to outputs/bench.
# BUDGET_S (default 420) bounds the sweep; extra arguments go to benchmarks/train_throughput.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bench}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh "$OUT/env.txt"   # 1-2. wheels from .whl/, a datasets stand-in, env.txt

# 3. The sweep itself: a greedy search under a time budget (see tinytitan/bench/sweep.py).
: > "$OUT/sweep.jsonl"
"$PY" benchmarks/train_throughput.py --sweep --profile --budget-s "${BUDGET_S:-420}" \
  --work-dir "$OUT/runs" --out "$OUT/sweep.jsonl" "$@" 2> >(tee "$OUT/sweep.log" >&2)

#!/usr/bin/env bash
# Issue 21's GPU checks in one command, on a bare GPU machine (torch + CUDA + Python, no index):
# the chunked loss against the plain one, float8 at Tiny batch 16, a deterministic resume after a
# SIGKILLed rank with async checkpoints and a torchrun restart, in-loop [eval], then extras while
# the budget lasts (benchmarks/gpu_check.py says what each phase runs).
#
#   util/fetch_gpu_wheels.sh                 # once, on a machine with PyPI: the missing wheels into .whl/ (~19 MB)
#   benchmarks/gpu_check.sh                  # on the GPU machine, from the checkout (with .whl/): ~8 minutes
#   benchmarks/gpu_check.sh --smoke          # the same code on CPU, debug model (tests/bench/test_sweep.py)
#
# Writes $OUT/check.jsonl (one JSON line per result, field "phase"), $OUT/check.log (progress, the
# tail of any failed run's log, and the summary table) and $OUT/env.txt (GPU, versions).
# OUT defaults to outputs/gpu_check; BUDGET_S (default 450) bounds the phases; the runs themselves
# live in $WORK (default /tmp/tinytitan-gpu-check). Extra arguments go to benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
WORK=${WORK:-/tmp/tinytitan-gpu-check}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh "$OUT/env.txt"   # wheels from .whl/, a datasets stand-in where needed, env.txt
export PYTHONUNBUFFERED=1
: > "$OUT/check.jsonl"
"$PY" benchmarks/gpu_check.py --budget-s "${BUDGET_S:-450}" --work-dir "$WORK" --out "$OUT/check.jsonl" "$@" \
  2> >(tee "$OUT/check.log" >&2)

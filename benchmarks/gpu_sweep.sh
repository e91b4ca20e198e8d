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
PY=${PYTHON:-python3}
OUT=${OUT:-outputs/bench}
SITE=${SITE:-/tmp/tinytitan-site}
mkdir -p "$OUT"

# 1. What the machine lacks, from the shipped wheels (never from the network).
if ! "$PY" -c "import torchtitan, tyro, torchdata, tensorboard" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_sweep: torchtitan is not importable and there is no .whl/: run util/fetch_gpu_wheels.sh first" >&2
    exit 2
  fi
  echo "gpu_sweep: installing $(ls .whl/*.whl | wc -l) wheels into $SITE" >&2
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# torchtitan's validator module imports Hugging Face `datasets` (with pyarrow and pandas, over
# 60 MB of wheels) at import time; the sweep trains on synthetic tokens and never calls it, so
# where it is missing a stand-in that fails loudly if it is ever used takes its place.
if ! "$PY" -c "import datasets" 2>/dev/null; then
  mkdir -p "$SITE/datasets"
  cat > "$SITE/datasets/__init__.py" <<'EOF'
"""Stand-in for Hugging Face datasets, written by benchmarks/gpu_sweep.sh: import-only."""


class Dataset:  # noqa: D101
    pass


class IterableDataset:  # noqa: D101
    pass


def load_dataset(*args, **kwargs):
    raise ImportError("datasets is not installed (gpu_sweep.sh stand-in): install it to load HF datasets")
EOF
  cat > "$SITE/datasets/distributed.py" <<'EOF'
def split_dataset_by_node(*args, **kwargs):
    raise ImportError("datasets is not installed (gpu_sweep.sh stand-in)")
EOF
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 2. What was measured on: kept next to the numbers.
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse --short HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import importlib.util, sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
import torchtitan
print("torchtitan", torchtitan.__version__, "torchao", "yes" if importlib.util.find_spec("torchao") else "no")
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >&2

# 3. The sweep itself: a greedy search under a time budget (see tinytitan/bench/sweep.py).
: > "$OUT/sweep.jsonl"
"$PY" benchmarks/train_throughput.py --sweep --profile --budget-s "${BUDGET_S:-420}" \
  --work-dir "$OUT/runs" --out "$OUT/sweep.jsonl" "$@" 2> >(tee "$OUT/sweep.log" >&2)

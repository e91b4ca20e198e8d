# Sourced by benchmarks/gpu_sweep.sh and benchmarks/gpu_check.sh, from the checkout's root: makes
# torchtitan and friends importable on a bare GPU machine (torch + CUDA + Python, no package index)
# and writes what was measured on to "$1" (GPU, driver, versions).
#
# Sets PY (python, $PYTHON or python3) and PYTHONPATH (the checkout, and $SITE with the wheels of .whl/).
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/tinytitan-site}

# 1. What the machine lacks, from the shipped wheels (never from the network).
if ! "$PY" -c "import torchtitan, tyro, torchdata, tensorboard, zstandard" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_env: torchtitan is not importable and there is no .whl/: run util/fetch_gpu_wheels.sh first" >&2
    exit 2
  fi
  echo "gpu_env: installing $(ls .whl/*.whl | wc -l) wheels into $SITE" >&2
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# torchtitan's validator module imports Hugging Face `datasets` at import time; without the eval
# wheels (util/fetch_gpu_wheels.sh carries it for lm-eval) an import-only stand-in that fails
# loudly if it is ever used takes its place: training on synthetic tokens or the embedded sample
# never calls it.
if ! "$PY" -c "import datasets" 2>/dev/null; then
  if ls -d "$SITE"/datasets-*.dist-info >/dev/null 2>&1; then  # carried, but it does not import with this image
    echo "gpu_env: the carried datasets does not import here ($("$PY" -c "import datasets" 2>&1 | tail -1));" \
      "using an import-only stand-in: no in-loop [eval]" >&2
    rm -rf "$SITE/datasets" "$SITE"/datasets-*.dist-info
  fi
  mkdir -p "$SITE/datasets"
  cat > "$SITE/datasets/__init__.py" <<'EOF'
"""Stand-in for Hugging Face datasets, written by benchmarks/gpu_env.sh: import-only."""


class Dataset:  # noqa: D101
    pass


class IterableDataset:  # noqa: D101
    pass


def load_dataset(*args, **kwargs):
    raise ImportError("datasets is not installed (gpu_env.sh stand-in): install it to load HF datasets")
EOF
  cat > "$SITE/datasets/distributed.py" <<'EOF'
def split_dataset_by_node(*args, **kwargs):
    raise ImportError("datasets is not installed (gpu_env.sh stand-in)")
EOF
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 2. What was measured on: kept next to the numbers.
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  # The caller's commit first: a copied checkout can carry a stale .git (seen on the device machine)
  [ -n "${TINYTITAN_COMMIT:-}" ] && echo "commit: $TINYTITAN_COMMIT" \
    || git rev-parse --short HEAD 2>/dev/null || echo "commit: unknown (no .git here; set TINYTITAN_COMMIT)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import importlib.util, sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
import torchtitan
print("torchtitan", torchtitan.__version__, "torchao", "yes" if importlib.util.find_spec("torchao") else "no",
      "lm_eval", "yes" if importlib.util.find_spec("lm_eval") else "no")
EOF
} > "$1" 2>&1
cat "$1" >&2

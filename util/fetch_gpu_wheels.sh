#!/usr/bin/env bash
# Downloads, here, the wheels a bare GPU machine lacks to run benchmarks/gpu_sweep.sh and
# benchmarks/gpu_check.sh: such machines carry torch 2.11 with CUDA on Python 3.12, with numpy,
# protobuf, tensorboard, requests, tokenizers, pyarrow, pandas, transformers, accelerate,
# sacrebleu and more (the device notes' package list), and cannot reach a package index.
#
#   util/fetch_gpu_wheels.sh                  # -> .whl/ for CPython 3.12, manylinux x86_64
#   PYVER=3.11 DEST=/tmp/whl311 util/fetch_gpu_wheels.sh   # e.g. to test the list in a venv here
#
# Only what the image lacks: a carried numpy or protobuf would shadow the image's own (and its
# compiled extensions were built against them). The list is what `import torchtitan.train` and
# tinytitan's data loader pull in, torchao for float8, and what in-loop [eval] imports of
# lm-evaluation-harness (lm_eval, Hugging Face datasets with dill and multiprocess; the rest of
# lm_eval's requirements are never imported on that path or are in the image). Without these four
# eval wheels gpu_sweep.sh puts an import-only stand-in for `datasets` on the path. Versions are
# the ones tinytitan is tested with; --no-deps keeps the set exactly this list, so a missing entry
# shows up as an ImportError in a script's first seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-.whl}

WHEELS=(
  # torchtitan and what its config, training loop and tinytitan's loader import
  torchtitan==0.2.2 tyro==1.0.17 docstring_parser==0.18.0 typeguard==4.6.1 torchdata==0.11.0
  zstandard==0.25.0
  # float8 training (torchtitan's quantize.linear.float8 converter); built for torch >= 2.11
  torchao==0.17.0
  # in-loop [eval]: lm-evaluation-harness and the Hugging Face datasets it reads tasks with
  lm_eval==0.4.13 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
)

mkdir -p "$DEST"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST" "${WHEELS[@]}"
echo "fetch_gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST (CPython $PYVER)"

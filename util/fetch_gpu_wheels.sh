#!/usr/bin/env bash
# Downloads, here, the wheels a bare GPU machine lacks to run the throughput sweep
# (benchmarks/gpu_sweep.sh): such machines carry torch 2.11 with CUDA (and triton,
# sympy, jinja2, filelock, fsspec, networkx, typing_extensions with it) on Python 3.12
# and cannot reach a package index.
#
#   util/fetch_gpu_wheels.sh                  # -> .whl/ for CPython 3.12, manylinux x86_64
#   PYVER=3.11 DEST=/tmp/whl311 util/fetch_gpu_wheels.sh   # e.g. to test the list in a venv here
#
# The list is what `import torchtitan.train` pulls in, plus torchao for float8, and
# stays under the device tool's 64 MiB: Hugging Face datasets (pyarrow and pandas
# alone are 67 MB), which torchtitan imports but the synthetic-token sweep never
# uses, is replaced by an import-only stand-in in gpu_sweep.sh. Versions are the
# ones tinytitan is tested with; --no-deps keeps the set exactly this list, so a
# missing entry shows up as an ImportError in the sweep's first seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-.whl}

WHEELS=(
  # torchtitan and what its config and training loop import
  torchtitan==0.2.2 tyro==1.0.17 docstring_parser==0.18.0 typeguard==4.6.1
  torchdata==0.11.0 requests==2.34.2 urllib3==2.7.0 certifi==2026.5.20 idna==3.20 charset_normalizer==3.4.7
  tokenizers==0.23.3
  # torch.utils.tensorboard, imported by torchtitan's metrics
  tensorboard==2.21.0 protobuf==7.36.2 numpy==2.4.6 packaging==26.2 absl-py==2.5.1
  # float8 training (torchtitan's quantize.linear.float8 converter); built for torch >= 2.11
  torchao==0.17.0
)

mkdir -p "$DEST"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST" "${WHEELS[@]}"
echo "fetch_gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST (CPython $PYVER)"

#!/usr/bin/env bash
# Runs the test suite, installing what it needs on first use. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
_extras="dev" # pytest, ruff, lm-eval, llama-models on top of what training needs
source util/bootstrap.sh
# Two test files at a time (TEST_WORKERS=0: one process, e.g. for --pdb). A file's tests stay in
# one worker, so a file's module fixtures (the SLURM cluster, the Nano run) are built once.
exec "$PYTHON" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"

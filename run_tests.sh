#!/usr/bin/env bash
# Runs the test suite, installing what it needs on first use. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source util/bootstrap.sh
exec "$PYTHON" -m pytest -q "$@"

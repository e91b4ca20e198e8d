"""util/bootstrap.sh's install stamp: the training script installs the runtime dependencies, the
test script the dev extras, and neither removes or re-installs what the other installed.

The real script runs in a copy of its folder, with $PYTHON a wrapper around this interpreter that
records every `-m pip` call instead of running it; everything else (the stamp, the import check)
is the script's own."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

WRAPPER = """#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "${@:3}" >> "$(dirname "$0")/pip-calls"; exit 0; fi
exec "%s" "$@"
"""


@pytest.fixture
def checkout(tmp_path) -> Path:
    (tmp_path / "util").mkdir()
    shutil.copy2(REPO / "util" / "bootstrap.sh", tmp_path / "util" / "bootstrap.sh")
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / "python"
    python.write_text(WRAPPER % sys.executable)
    python.chmod(0o755)
    return tmp_path


def stamp(checkout: Path, extras: str, pyproject_hash: str | None = None) -> str:
    digest = pyproject_hash or hashlib.sha256((checkout / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return f"{sys.prefix}|{digest}|{extras}"


def bootstrap(checkout: Path, extras: str) -> list[str]:
    """Sources the script as run_llama_train.sh ("") or run_tests.sh ("dev") do; returns the pip calls."""
    script = f'set -euo pipefail; cd "{checkout}"; _extras="{extras}"; source util/bootstrap.sh; echo "$PYTHON"'
    env = {**os.environ, "PYTHON": str(checkout / "python")}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(checkout / "python")
    calls = checkout / "pip-calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_training_after_the_tests_installs_nothing_and_keeps_the_dev_tools(checkout):
    (checkout / ".installed").write_text(stamp(checkout, "dev") + "\n")
    assert bootstrap(checkout, "") == []
    assert (checkout / ".installed").read_text().strip() == stamp(checkout, "dev")


def test_the_tests_after_training_add_the_dev_extras(checkout):
    (checkout / ".installed").write_text(stamp(checkout, "") + "\n")
    assert bootstrap(checkout, "dev") == [f"install --progress-bar on -e {checkout}[dev]"]
    assert (checkout / ".installed").read_text().strip() == stamp(checkout, "dev")


def test_a_changed_pyproject_reinstalls_with_the_extras_already_there(checkout):
    (checkout / ".installed").write_text(stamp(checkout, "dev", pyproject_hash="0" * 16) + "\n")
    assert bootstrap(checkout, "") == [f"install --progress-bar on -e {checkout}[dev]"]
    assert (checkout / ".installed").read_text().strip() == stamp(checkout, "dev")


def test_a_first_training_run_installs_the_runtime_dependencies_only(checkout):
    assert bootstrap(checkout, "") == [f"install --progress-bar on -e {checkout}"]
    assert (checkout / ".installed").read_text().strip() == stamp(checkout, "")

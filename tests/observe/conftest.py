"""Fixtures of the observe tests: an HF export of the shared debug run (made once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def debug_checkpoint(debug_run):
    return debug_run / "checkpoint" / "step-20"


@pytest.fixture(scope="session")
def debug_export(debug_checkpoint, tmp_path_factory):
    """The step-20 checkpoint exported to Hugging Face format by the export package (verified there), from the
    run's record (no --config): its tinytitan.json names that record."""
    from tinytitan.export.pipeline import export

    out = tmp_path_factory.mktemp("observe") / "debug-hf"
    export(debug_checkpoint, out)
    return out

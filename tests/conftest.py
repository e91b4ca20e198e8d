"""Shared fixtures. ``debug_run`` trains the debug model once per session (2 CPU processes)
and is reused by the checkpoint, export and observe tests, so the suite trains it once, also
when pytest-xdist runs test files in several worker processes (``built_once``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from tests.helpers import DEBUG_CONFIG, STAGES_CONFIG, N, launch, small_run_overrides, stages_run_overrides

DEBUG_RUN_STEPS = 20


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` once per test session, even with pytest-xdist's worker processes: they share
    the session's temp root, and the first to take the lock builds while the others wait.
    Callers treat the folder as read-only (copy it to change it)."""
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    root = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.getbasetemp()
    folder, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build by another worker left
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """2N steps with a checkpoint every N: the reference losses of the resume and fault tests."""
    return built_once(tmp_path_factory, "uninterrupted", lambda dump: launch(small_run_overrides(dump, 2 * N, N)))


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory):
    """A finished debug run: checkpoints at steps 10 and 20 (full state), TensorBoard, metrics.jsonl."""

    def build(dump):
        overrides = small_run_overrides(dump, steps=DEBUG_RUN_STEPS, interval=10)
        launch([*overrides, "--validation.enable", "--validation.freq", "10", "--validation.steps", "2"])

    return built_once(tmp_path_factory, "debug_run", build)


@pytest.fixture(scope="session")
def debug_export(debug_run, tmp_path_factory):
    """``tinytitan export`` (verified) of the debug run's step 20: the push, Hub and damaged-input tests' folder."""
    from tinytitan.cli import main

    def build(out):
        step20 = debug_run / "checkpoint" / "step-20"
        assert main(["export", str(step20), "--out", str(out), "--config", str(DEBUG_CONFIG)]) == 0

    return built_once(tmp_path_factory, "debug_export", build)


@pytest.fixture(scope="session")
def stages_run(debug_run, tmp_path_factory):
    """The two-stage debug recipe, continued from ``debug_run``'s step 20 (weights only): 12 steps, stage
    'pretrain' steps 1-6, 'cooldown' (a third source, the LR decaying) 7-12, checkpoints at 4, 8, 12, and
    what the model received at every step (tests.record_batches)."""

    def build(dump):
        overrides = [*stages_run_overrides(dump, debug_run), "--experimental.custom_import", "tests.record_batches"]
        (dump / "launch.log").parent.mkdir(parents=True, exist_ok=True)
        proc = launch(overrides, config=STAGES_CONFIG)
        (dump / "launch.log").write_text(proc.stdout + proc.stderr)

    return built_once(tmp_path_factory, "stages_run", build)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (files of several minutes of training) first, so that pytest-xdist's two
    workers finish together rather than one running the last long file alone."""
    items.sort(key=lambda item: "slow" not in item.keywords)  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def llama3_model():
    """Meta's Llama 3 ``tokenizer.model`` (tiktoken ranks) as shipped by the llama-models package."""
    from importlib.resources import files
    from pathlib import Path

    return Path(str(files("llama_models") / "llama3" / "tokenizer.model"))


@pytest.fixture(scope="session")
def llama3_tokenizer(llama3_model, tmp_path_factory):
    """The real 128,256-token Llama 3 tokenizer folder, converted once per session (~8 s)."""
    from tinytitan.tokenizer_convert import convert_tokenizer

    return built_once(
        tmp_path_factory, "llama3-tokenizer", lambda out: convert_tokenizer(llama3_model, out, log=lambda _: None)
    )

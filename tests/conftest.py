"""Shared fixtures. ``debug_run`` trains the debug model once per session (2 CPU processes)
and is reused by the checkpoint, export and observe tests, so the suite trains it once."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import N, launch, small_run_overrides

DEBUG_RUN_STEPS = 20


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """2N steps with a checkpoint every N: the reference losses of the resume and fault tests."""
    dump = tmp_path_factory.mktemp("uninterrupted")
    launch(small_run_overrides(dump, steps=2 * N, interval=N))
    return dump


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory):
    """A finished debug run: checkpoints at steps 10 and 20 (full state), TensorBoard, metrics.jsonl."""
    dump = tmp_path_factory.mktemp("debug_run")
    overrides = small_run_overrides(dump, steps=DEBUG_RUN_STEPS, interval=10)
    overrides = [*overrides, "--validation.enable", "--validation.freq", "10", "--validation.steps", "2"]
    launch(overrides)
    return dump


def pytest_collection_modifyitems(config, items):
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

    out = tmp_path_factory.mktemp("llama3") / "tokenizer"
    convert_tokenizer(llama3_model, out, log=lambda _: None)
    return out

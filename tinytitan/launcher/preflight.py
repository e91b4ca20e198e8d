"""The launcher's one preflight: every check of a job that can run before torchrun starts a process.

First the pure checks of every section (``tinytitan.job_config.validate_job_config``), then the
checks that read files or the environment: the tokenizer loads and fits the flavor, the data
(``tinytitan.data.preflight.check_data``: files, records, shards, readers), lm-eval and its
tasks for ``[eval]``, and what the GPUs and torch allow. Each failure is one ``TinytitanError``
line, so a mistake costs seconds, not a crash in every rank minutes later.
"""

from __future__ import annotations

from pathlib import Path

from tinytitan.errors import TinytitanError


def preflight(job_config, world_size: int, gpus: int, torch_version: str) -> None:
    """Raises the first problem of ``job_config`` for a run of ``world_size`` ranks on ``gpus`` GPUs per node."""
    from tinytitan.data.preflight import check_data
    from tinytitan.job_config import validate_job_config

    validate_job_config(job_config, world_size)
    check_tokenizer(job_config)
    check_data(job_config, world_size)
    check_eval_tasks(job_config)
    check_async_checkpoint(job_config, gpus, torch_version)


def check_tokenizer(job_config) -> None:
    """The tokenizer folder loads (``load_tokenizer`` names what is missing) and fits the flavor's embedding."""
    from tinytitan.models import FLAVORS, SPEC_NAME
    from tinytitan.tokenizer import load_tokenizer

    if job_config.model.name != SPEC_NAME:
        return
    vocab = load_tokenizer(job_config.model.hf_assets_path).vocab_size
    model_vocab = FLAVORS[job_config.model.flavor].vocab_size
    if vocab > model_vocab:
        path = Path(job_config.model.hf_assets_path) / "tokenizer.json"
        raise TinytitanError(
            f"tokenizer {path} has {vocab} tokens but flavor {job_config.model.flavor!r} embeds {model_vocab}: "
            "use the tokenizer the flavor was made for"
        )


def check_eval_tasks(job_config) -> None:
    """``[eval]``: lm-eval is installed and knows every task (indexing its task files takes a few seconds)."""
    if not job_config.eval.tasks:
        return
    from tinytitan.observe.harness import check_tasks

    settings = job_config.eval.task_settings()
    check_tasks(settings.tasks, settings.include_path)


def check_async_checkpoint(job_config, gpus: int, torch_version: str) -> None:
    """async_with_pinned_mem stages into CUDA pinned memory, and torch 2.11 crashes on its second save."""
    if job_config.checkpoint.async_mode != "async_with_pinned_mem":
        return
    if not gpus:
        raise TinytitanError(
            "[checkpoint] async_mode = 'async_with_pinned_mem' needs a GPU (pinned memory): use 'async' or 'disabled'"
        )
    if torch_version.startswith("2.11."):
        raise TinytitanError(
            f"[checkpoint] async_mode = 'async_with_pinned_mem' crashes on the second save with torch {torch_version} "
            "(torchtitan#3476, pytorch#183413): use async_mode = 'async'"
        )

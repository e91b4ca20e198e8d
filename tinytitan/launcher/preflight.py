"""The launcher's one preflight: every check of a job that can run before torchrun starts a process.

First the pure checks of every section (``tinytitan.job_config.validate_job_config``), then the
checks that read files or the environment: the tokenizer loads and fits the flavor, the data
(``tinytitan.data.preflight.check_data``: files, records, shards, readers), lm-eval and its
tasks for ``[eval]``, what the GPUs and torch allow, and the checkpoint a continued pretraining
starts from (``[checkpoint] initial_load_path``). Each failure is one ``TinytitanError``
line, so a mistake costs seconds, not a crash in every rank minutes later.
"""

from __future__ import annotations

from pathlib import Path

from tinytitan.errors import TinytitanError
from tinytitan.run.folder import RunFolder


def preflight(job_config, world_size: int, gpus: int, torch_version: str) -> dict[str, list[str]]:
    """Raises the first problem of ``job_config`` for a run of ``world_size`` ranks on ``gpus`` GPUs per node;
    returns the text sources' files as listed (the run's record reuses them rather than listing again)."""
    from tinytitan.data.preflight import check_data
    from tinytitan.job_config import validate_job_config

    validate_job_config(job_config, world_size)
    check_tokenizer(job_config)
    files = check_data(job_config, world_size)
    check_eval_tasks(job_config)
    check_async_checkpoint(job_config, gpus, torch_version)
    check_initial_load(job_config)
    return files


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


def check_initial_load(job_config) -> None:
    """Continued pretraining: ``[checkpoint] initial_load_path`` is a complete step folder whose model fits the
    flavor. torchtitan reads it only while the run's own checkpoint folder does not exist (a resume of the
    continued run uses its own checkpoints), so it is checked only then."""

    from tinytitan.checkpoint.completeness import METADATA, folder_problem
    from tinytitan.checkpoint.flavors import check_shapes
    from tinytitan.checkpoint.reader import open_checkpoint
    from tinytitan.models import SPEC_NAME

    ckpt = job_config.checkpoint
    path = ckpt.initial_load_path
    if not path or not ckpt.enable or RunFolder.of(job_config).checkpoints.exists():
        return
    if ckpt.initial_load_in_hf:
        return  # a Hugging Face folder: torchtitan's own loader checks it
    where = f"[checkpoint] initial_load_path = {path!r}"
    if not Path(path).is_dir():
        raise TinytitanError(
            f"{where} does not exist: point it at a step folder of a finished run, e.g. outputs/debug/checkpoint/step-20"
        )
    if not (Path(path) / METADATA).is_file():
        raise TinytitanError(
            f"{where} is not a checkpoint step folder (no {METADATA}): point it at a step-N folder inside the run's "
            "checkpoint folder, e.g. outputs/debug/checkpoint/step-20"
        )
    problem = folder_problem(path)
    if problem is not None:
        raise TinytitanError(f"{where} is incomplete: {problem}; use a complete step (`tinytitan checkpoint inspect`)")
    if job_config.model.name == SPEC_NAME:
        check_shapes(
            open_checkpoint(path, check=False, hold=False).shapes(), job_config.model.flavor, f"checkpoint {path}"
        )

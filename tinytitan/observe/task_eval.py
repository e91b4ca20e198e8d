"""Benchmark accuracy of one checkpoint or export: lm-eval tasks, the result as one JSON-ready dict.

``{"model", "step", "tokens", "tasks": {task: {"acc,none": ..., ...}}}``: a checkpoint is scored by
torchtitan's own model (``TitanLM``), an export by lm-eval's ``HFLM``. ``step`` and ``tokens`` (the
global count of tokens trained on) come from the run (``metrics.jsonl`` next to the checkpoint) or
the export's ``tinytitan.json``; None where unknown.
"""

from __future__ import annotations

import os

from tinytitan.errors import TinytitanError
from tinytitan.lm_tasks import TaskSettings


def score(harness, settings: TaskSettings) -> dict[str, dict[str, float]] | None:
    """task -> lm-eval's metric dict for an lm-eval model, with ``settings``; None off rank 0."""
    from tinytitan.observe.harness import metric_dict, run_tasks

    results = run_tasks(harness, settings.tasks, include_path=settings.include_path, limit=settings.limit,
                        num_fewshot=settings.num_fewshot)  # fmt: skip
    return None if results is None else metric_dict(results)


def score_model(lm, settings: TaskSettings, distributed: bool = False, progress: bool = False):
    """``score`` for a loaded ``LanguageModel`` (torchtitan's model)."""
    from tinytitan.observe.harness import titan_lm

    def forward(ids):
        return lm.module(ids)

    harness = titan_lm(forward, lm.tokenizer, lm.max_seq_len, lm.device, settings.batch_size, distributed,
                       progress=progress)  # fmt: skip
    return score(harness, settings)


def evaluate_checkpoint(checkpoint, step, settings: TaskSettings, device=None, *, config=None, trained=None,
                        progress: bool = False, weights: str = "raw") -> dict:  # fmt: skip
    """A checkpoint's scores; the run's record (or ``config``, or ``trained``) gives flavor and tokenizer."""
    from tinytitan.observe.harness import require_lm_eval
    from tinytitan.observe.loading import from_checkpoint

    require_lm_eval()
    lm = from_checkpoint(checkpoint, config, step, device, trained=trained, weights=weights)
    return {
        "model": lm.name,
        "step": lm.step,
        "tokens": lm.tokens,
        "tasks": score_model(lm, settings, progress=progress),
    }


def evaluate_random_init(config, settings: TaskSettings, device=None, *, progress: bool = False) -> dict:
    """The chance baseline: the config's model as training initialises it with its [debug] seed (step 0)."""
    from tinytitan.observe.harness import require_lm_eval
    from tinytitan.observe.loading import from_random_init

    require_lm_eval()
    lm = from_random_init(config, None, device)
    return {"model": lm.name, "step": 0, "tokens": 0, "tasks": score_model(lm, settings, progress=progress)}


def evaluate_export(folder: str | os.PathLike, settings: TaskSettings, device=None, *, progress: bool = False) -> dict:
    """lm-eval's HFLM on an export; step and tokens from its tinytitan.json."""
    from pathlib import Path

    from tinytitan.observe.harness import hf_harness_model
    from tinytitan.observe.loading import export_record

    if not (Path(folder) / "config.json").is_file():
        raise TinytitanError(f"{folder} has no config.json: pass the folder written by `tinytitan export --format hf`")
    harness = hf_harness_model(folder, settings.batch_size, device or "cpu", progress=progress)
    record = export_record(folder)
    return {"model": str(folder), "step": record.get("step"), "tokens": record.get("ntokens_seen"),
            "tasks": score(harness, settings)}  # fmt: skip


def format_table(result: dict) -> str:
    """task / metric / value lines, for the terminal."""
    lines = [f"{result['model']}  step {result['step']}  tokens {result['tokens']}",
             f"{'task':<28} {'metric':<20} {'value':>8}"]  # fmt: skip
    for task, metrics in result["tasks"].items():
        for metric, value in metrics.items():
            lines.append(f"{task:<28} {metric:<20} {value:>8.4f}")
    return "\n".join(lines)

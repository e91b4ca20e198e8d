"""``tinytitan eval tasks --run RUN_DIR --tasks ...``: benchmark accuracy over a whole run, resumable.

Every complete ``step-N`` checkpoint (one with DCP's ``.metadata``, written last) is scored and
its result saved as ``RUN_DIR/eval/step-N.json`` (written to a temporary name, then renamed, so
a killed evaluation leaves no half file). A rerun skips the steps whose file already holds
the asked tasks with the same settings, and scores only missing tasks otherwise. Then it writes
``eval/summary.csv`` (step, tokens, one column per lm-eval ``task/metric,filter``),
``eval/summary.md`` (the same table for reading: ``<task> acc``, ``<task> acc_norm``; no stderr
columns) and the scalars ``eval/<task>/<metric>`` into ``RUN_DIR/tb/eval`` for TensorBoard and
``tinytitan plot``. The flavor and tokenizer come from the run's record (``--config`` overrides it).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
from pathlib import Path

from tinytitan.errors import TinytitanError
from tinytitan.lm_tasks import TaskSettings
from tinytitan.observe.task_eval import evaluate_checkpoint

EVAL_DIR = "eval"
TB_SUBDIR = Path("tb") / "eval"


def scalar_tag(task: str, metric: str) -> str:
    """``eval/<task>/<metric>``: lm-eval's ``acc,none`` becomes ``acc``, another filter a sub-name."""
    name, _, flt = metric.partition(",")
    return f"eval/{task}/{name}" + (f"/{flt}" if flt and flt != "none" else "")


def _settings_key(settings: TaskSettings) -> dict:
    return {"limit": settings.limit, "num_fewshot": settings.num_fewshot, "include_path": settings.include_path}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing or unreadable: scored again


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_checkpoints(run_dir: Path) -> dict[int, Path]:
    from tinytitan.checkpoint.completeness import saved_step_folders

    steps = saved_step_folders(run_dir / "checkpoint") or saved_step_folders(run_dir)
    if not steps:
        raise TinytitanError(f"{run_dir} has no complete step-N checkpoints: pass a run's dump folder")
    return dict(steps)


def evaluate_run(run_dir, settings: TaskSettings, device=None, *, progress: bool = False, force: bool = False,
                 config=None) -> list:  # fmt: skip
    """Scores what is missing, then writes the summaries and TensorBoard scalars; returns every step's result."""
    from tqdm import tqdm

    from tinytitan.run.record import read_trained_run

    run_dir = Path(run_dir)
    checkpoints = run_checkpoints(run_dir)
    trained = read_trained_run(run_dir, config, required="--run")
    out = run_dir / EVAL_DIR
    out.mkdir(exist_ok=True)
    results = []
    bar = tqdm(checkpoints.items(), desc="checkpoints", unit="ckpt", disable=not progress, file=sys.stderr)
    for step, folder in bar:
        path = out / f"step-{step}.json"
        saved = _read(path)
        if saved is not None and saved.get("settings") != _settings_key(settings) and not force:
            raise TinytitanError(
                f"{path} was scored with other settings {saved.get('settings')}: pass --force to score it again, "
                "or use the same --limit/--num-fewshot/--include-path"
            )
        if force or saved is None:
            saved = {"settings": _settings_key(settings), "tasks": {}}
        missing = [t for t in settings.tasks if t not in saved["tasks"]]
        if missing:
            bar.set_postfix_str(f"step {step}")
            result = evaluate_checkpoint(folder, None, dataclasses.replace(settings, tasks=missing), device,
                                         trained=trained, progress=progress)  # fmt: skip
            saved.update(step=result["step"], tokens=result["tokens"], model=result["model"])
            saved["tasks"].update(result["tasks"])
            _write_atomic(path, json.dumps(saved, indent=1) + "\n")
        results.append(saved)
    write_summaries(out, results)
    write_tensorboard(run_dir / TB_SUBDIR, results)
    return results


def _columns(results: list[dict]) -> list[tuple[str, str]]:
    return sorted({(t, m) for r in results for t, ms in r["tasks"].items() for m in ms if "," in m})


def column_name(task: str, metric: str) -> str:
    """``acc,none`` of a task -> ``<task> acc`` (another filter: ``<task> acc (filter)``), as docs/measured.md shows."""
    name, _, flt = metric.partition(",")
    return f"{task} {name}" + (f" ({flt})" if flt and flt != "none" else "")


def write_summaries(out: Path, results: list[dict]) -> None:
    columns = _columns(results)
    header = ["step", "tokens", *(f"{task}/{metric}" for task, metric in columns)]
    rows = [[r["step"], r["tokens"], *(r["tasks"].get(t, {}).get(m) for t, m in columns)] for r in results]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(header)
    writer.writerows(rows)
    _write_atomic(out / "summary.csv", table.getvalue())
    shown = [(t, m) for t, m in columns if "_stderr" not in m]  # the scores, not their standard errors
    header = ["step", "tokens", *(column_name(t, m) for t, m in shown)]
    rows = [[r["step"], r["tokens"], *(r["tasks"].get(t, {}).get(m) for t, m in shown)] for r in results]
    cell = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else f"{v:,}")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    _write_atomic(out / "summary.md", "\n".join(lines) + "\n")


def write_tensorboard(tb_dir: Path, results: list[dict]) -> None:
    """One fresh event file of every step's scalars (a rerun replaces it, so no point appears twice)."""
    from torch.utils.tensorboard import SummaryWriter

    tb_dir.mkdir(parents=True, exist_ok=True)
    for old in tb_dir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(log_dir=str(tb_dir))
    for r in results:
        for task, metrics in r["tasks"].items():
            for metric, value in metrics.items():
                if "," in metric:  # lm-eval's "metric,filter" keys
                    writer.add_scalar(scalar_tag(task, metric), value, r["step"])
    writer.close()

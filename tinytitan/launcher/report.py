"""What the launcher tells the user at the start and at the end of a run.

Start: the run folder and its record, the checkpoint folder (and the step it resumes from), the
TensorBoard command and the command that resumes the run. End (after torchrun exits 0): steps and
tokens, the last train and validation losses (per source), wall time and tokens/s, where the
checkpoints are, and the next commands. The end's figures are read from the rows this launch
appended to ``metrics.jsonl``, so they are the numbers TensorBoard shows.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tinytitan.run.folder import RunFolder, step_name

WIDTH = 16  # the label column


def shown(path: str | os.PathLike) -> str:
    """A path as the user would type it: relative below the working directory, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def _row(label: str, text: str) -> str:
    return f"  {label:<{WIDTH}} {text}"


def tensorboard_command(run: RunFolder, enabled: bool) -> str | None:
    """The command that shows the run in TensorBoard, None when ``[metrics] enable_tensorboard`` is off."""
    return f"tensorboard --logdir {shlex.quote(shown(run.tensorboard))}" if enabled else None


def start_lines(job_config, *, record: Path | None, command: str, start_step: int) -> list[str]:
    run = RunFolder.of(job_config)
    dump, ckpt = run.root, job_config.checkpoint
    lines = [_row("run folder", shown(dump) + (f"  (the config as run: {shown(record)})" if record else ""))]
    initialised = initialised_from(job_config, start_step)
    if initialised:
        lines.append(_row("initialised", initialised))
    if ckpt.enable:
        where = f"{shown(run.checkpoints)}  (every {ckpt.interval} steps and the last"
        where += f"; resuming from step {start_step})" if start_step else ")"
        lines.append(_row("checkpoints", where))
    else:
        lines.append(_row("checkpoints", "off ([checkpoint] enable = false): an interrupted run starts over"))
    tensorboard = tensorboard_command(run, job_config.metrics.enable_tensorboard)
    lines.append(_row("TensorBoard", tensorboard or "off ([metrics] enable_tensorboard = false)"))
    if ckpt.enable:
        lines.append(_row("resume", f"{command}   (the same command: it continues from the newest checkpoint)"))
    return lines


def initialised_from(job_config, start_step: int) -> str | None:
    """``from X (weights only: …)`` for a continued run's first launch (torchtitan reads
    ``initial_load_path`` only while the run has no checkpoint of its own), else None."""
    ckpt = job_config.checkpoint
    if not ckpt.initial_load_path or not ckpt.enable or start_step:
        return None
    kind = "a Hugging Face folder" if ckpt.initial_load_in_hf else "weights only"
    return f"from {shown(ckpt.initial_load_path)} ({kind}: a fresh optimizer, LR schedule and data stream)"


def metrics_size(run: RunFolder) -> int:
    """Bytes in metrics.jsonl before this launch (its rows come after)."""
    return run.metrics.stat().st_size if run.metrics.is_file() else 0


@dataclass
class Outcome:
    """This launch's figures, from its rows of metrics.jsonl."""

    step: int | None = None
    tokens: int | None = None
    loss: float | None = None
    validation_step: int | None = None
    validation_loss: float | None = None
    validation_sources: dict[str, float] = field(default_factory=dict)
    training_s: float | None = None  # summed over starts: each start's first logged step to its last
    starts: int = 0  # process starts that logged a step (torchrun restarts each rank's elapsed clock)
    tokens_per_s: float | None = None  # mean of the rows' tps (tokens/s per process)
    rows: int = 0
    stage_first_step: dict[str, int] = field(default_factory=dict)  # [[data.stages]] begun: name -> first step
    start_step: int = 0  # the step this launch resumed from (0: a new run)


def read_outcome(run: RunFolder, offset: int) -> Outcome:
    path = run.metrics
    out = Outcome()
    if not path.is_file():
        return out
    with path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    tps: list[float] = []
    before_this_start, elapsed = 0.0, None
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("loss") is not None:
            out.rows += 1
            out.step, out.loss = row["step"], row["loss"]
            out.tokens = row.get("n_tokens_seen", out.tokens)
            if (now := row.get("time/elapsed_s")) is not None:
                if elapsed is None or now == 0.0 or now < elapsed:  # a start's first logged step is at 0.0
                    before_this_start += elapsed or 0.0
                    out.starts += 1
                elapsed = now
                out.training_s = before_this_start + now
            if row.get("tps") is not None:
                tps.append(row["tps"])
        for key, value in row.items():
            parts = key.split("/")
            if len(parts) == 4 and parts[:2] == ["data", "stage"] and parts[3] == "first_step":
                out.stage_first_step[parts[2]] = int(value)
        if row.get("validation/loss") is not None:
            out.validation_step, out.validation_loss = row["step"], row["validation/loss"]
            out.validation_sources = {k.split("/")[1]: v for k, v in row.items()
                                      if k.startswith("validation/") and k.endswith("/loss") and k.count("/") == 2}  # fmt: skip
    out.tokens_per_s = sum(tps) / len(tps) if tps else None
    return out


def stages_run(outcome: Outcome) -> str:
    """``pretrain steps 1-6, cooldown steps 7-12``: the stages this launch logged, to its last step."""
    begun = sorted(outcome.stage_first_step.items(), key=lambda item: item[1])
    parts = []
    for i, (name, first) in enumerate(begun):
        last = begun[i + 1][1] - 1 if i + 1 < len(begun) else outcome.step
        parts.append(f"{name} steps {first}-{last}")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))  # truncated, as the ranks' "elapsed" is
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def guard_summary(run: RunFolder) -> str:
    """Skipped steps and rollbacks of the whole run (``steps.jsonl``, tinytitan.run.steps); "" when none."""
    from tinytitan.run.steps import read_events

    summary = read_events(run).summary()
    return f"{summary} ({shown(run.steps)})" if summary else ""


def end_lines(job_config, outcome: Outcome, *, wall_s: float) -> list[str]:
    from tinytitan.checkpoint.completeness import saved_step_folders

    run, total = RunFolder.of(job_config), job_config.training.steps
    if outcome.step is None:
        head = f"tinytitan: finished; this launch logged no step ({shown(run.metrics)})"
        return [head, _row("time", f"{duration(wall_s)} wall")]
    tokens = f", {outcome.tokens:,} tokens seen" if outcome.tokens is not None else ""
    lines = [f"tinytitan: finished at step {outcome.step} of {total}{tokens}"]
    initialised = initialised_from(job_config, outcome.start_step)
    if initialised:
        lines.append(_row("initialised", initialised))
    stages = stages_run(outcome)
    if stages:
        lines.append(_row("stages", stages))
    lines.append(_row("train loss", f"{outcome.loss:.4f} (step {outcome.step})"))
    if outcome.validation_loss is not None:
        per_source = ", ".join(f"{name} {loss:.4f}" for name, loss in outcome.validation_sources.items())
        lines.append(_row("validation loss", f"{outcome.validation_loss:.4f} (step {outcome.validation_step})"
                                             + (f": {per_source}" if per_source else "")))  # fmt: skip
    time = f"{duration(wall_s)} wall"
    if outcome.training_s is not None:
        if outcome.starts > 1:
            time += (f", {duration(outcome.training_s)} training in {outcome.starts} starts"
                     " (each from its first logged step to its last)")  # fmt: skip
        else:
            time += f", {duration(outcome.training_s)} from the first logged step to the last"
    if outcome.tokens_per_s is not None:
        time += f"; {outcome.tokens_per_s:,.0f} tokens/s per process"
    lines.append(_row("time", time))
    guard = guard_summary(run)
    if guard:
        lines.append(_row("guard", guard))
    nexts = [c for c in [tensorboard_command(run, job_config.metrics.enable_tensorboard)] if c]
    saved = saved_step_folders(run.checkpoints) if job_config.checkpoint.enable else []
    if saved:
        names = ", ".join(step_name(s) for s, _ in saved[-3:]) + (f" ({len(saved)} in all)" if len(saved) > 3 else "")
        lines.append(_row("checkpoints", f"{shown(run.checkpoints)}: {names}"))
        last = shlex.quote(shown(saved[-1][1]))
        name = f"{run.root.name}-{step_name(saved[-1][0])}"
        nexts += [f"tinytitan eval loss --checkpoint {last}", f"tinytitan export {last} --out exports/{name}"]
    else:
        lines.append(
            _row(
                "checkpoints", "none saved" + ("" if job_config.checkpoint.enable else " ([checkpoint] enable = false)")
            )
        )
    for i, command in enumerate(nexts):
        lines.append(_row("next" if i == 0 else "", command))
    return lines

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


def tensorboard_command(job_config) -> str | None:
    if not job_config.metrics.enable_tensorboard:
        return None
    return f"tensorboard --logdir {shlex.quote(shown(RunFolder.of(job_config).tensorboard))}"


def checkpoint_folder(job_config) -> Path:
    return RunFolder.of(job_config).checkpoints


def start_lines(job_config, *, record: Path | None, command: str, start_step: int) -> list[str]:
    dump = RunFolder.of(job_config).root
    ckpt = job_config.checkpoint
    lines = [_row("run folder", shown(dump) + (f"  (the config as run: {shown(record)})" if record else ""))]
    if ckpt.enable:
        where = f"{shown(checkpoint_folder(job_config))}  (every {ckpt.interval} steps and the last"
        where += f"; resuming from step {start_step})" if start_step else ")"
        lines.append(_row("checkpoints", where))
    else:
        lines.append(_row("checkpoints", "off ([checkpoint] enable = false): an interrupted run starts over"))
    tensorboard = tensorboard_command(job_config)
    lines.append(_row("TensorBoard", tensorboard or "off ([metrics] enable_tensorboard = false)"))
    if ckpt.enable:
        lines.append(_row("resume", f"{command}   (the same command: it continues from the newest checkpoint)"))
    return lines


def metrics_size(job_config) -> int:
    """Bytes in metrics.jsonl before this launch (its rows come after)."""
    path = RunFolder.of(job_config).metrics
    return path.stat().st_size if path.is_file() else 0


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


def read_outcome(job_config, offset: int) -> Outcome:
    path = RunFolder.of(job_config).metrics
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
        if row.get("validation/loss") is not None:
            out.validation_step, out.validation_loss = row["step"], row["validation/loss"]
            out.validation_sources = {k.split("/")[1]: v for k, v in row.items()
                                      if k.startswith("validation/") and k.endswith("/loss") and k.count("/") == 2}  # fmt: skip
    out.tokens_per_s = sum(tps) / len(tps) if tps else None
    return out


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))  # truncated, as the ranks' "elapsed" is
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def end_lines(job_config, outcome: Outcome, *, wall_s: float) -> list[str]:
    from tinytitan.checkpoint.completeness import saved_step_folders

    total = job_config.training.steps
    if outcome.step is None:
        head = f"tinytitan: finished; this launch logged no step ({shown(RunFolder.of(job_config).metrics)})"
        return [head, _row("time", f"{duration(wall_s)} wall")]
    tokens = f", {outcome.tokens:,} tokens seen" if outcome.tokens is not None else ""
    lines = [f"tinytitan: finished at step {outcome.step} of {total}{tokens}"]
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
    nexts = [c for c in [tensorboard_command(job_config)] if c]
    saved = saved_step_folders(checkpoint_folder(job_config)) if job_config.checkpoint.enable else []
    if saved:
        names = ", ".join(step_name(s) for s, _ in saved[-3:]) + (f" ({len(saved)} in all)" if len(saved) > 3 else "")
        lines.append(_row("checkpoints", f"{shown(checkpoint_folder(job_config))}: {names}"))
        last = shlex.quote(shown(saved[-1][1]))
        name = f"{RunFolder.of(job_config).root.name}-{step_name(saved[-1][0])}"
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

"""What a step did besides training, in one place: ``steps.jsonl`` and the checkpoints' health marks.

The ranks' guard (``tinytitan.rank.guard``) appends one ``StepEvent`` per event to
``RunFolder.steps`` (rank 0 only); the end summary, the model card, ``tinytitan plot`` and
``tinytitan checkpoint inspect`` read them back with ``read_events`` / ``read_health``.

Event kinds are an open set of strings; readers count every kind and show the ones they know:

- ``skipped``: the step's update was not applied (non-finite loss or gradient norm, or a spike);
  ``reason`` says which, ``loss`` and ``grad_norm`` are the step's values (None when not finite).
- ``rolled_back``: after ``[guard] max_skipped`` skipped steps in a row the ranks reloaded
  ``checkpoint_step`` and skipped the data of ``skipped_steps`` steps, global windows
  ``[first_window, end_window)``.
- ``stopped``: the run gave up at ``step`` after ``rollbacks`` rollbacks; ``checkpoint_step`` is the
  last healthy checkpoint (None: none).
- ``save_refused``: the weights were not finite at a checkpoint step: nothing was saved.

A health mark (``checkpoint/step-N/health.json``) says whether the run was healthy when step N was
saved: its weights finite, its own step applied and no run of skipped steps in progress
(``healthy``), and how many steps were skipped since the previous checkpoint.
Stdlib only (layer 1).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from tinytitan.run.folder import RunFolder, health_file

SKIPPED, ROLLED_BACK, STOPPED, SAVE_REFUSED = "skipped", "rolled_back", "stopped", "save_refused"


def _number(value: float | None) -> float | None:
    """JSON has no NaN/inf: a non-finite value is written as None (the reason says which)."""
    return value if value is None or math.isfinite(value) else None


@dataclass(frozen=True)
class StepEvent:
    step: int
    kind: str  # an open set: SKIPPED, ROLLED_BACK, STOPPED, SAVE_REFUSED, ...
    reason: str = ""
    loss: float | None = None
    grad_norm: float | None = None
    checkpoint_step: int | None = None  # rolled_back: the step reloaded; stopped: the last healthy checkpoint
    skipped_steps: int | None = None  # rolled_back: steps of data skipped after the reload
    first_window: int | None = None  # rolled_back: the global windows skipped, [first_window, end_window)
    end_window: int | None = None
    rollbacks: int | None = None  # rolled_back / stopped: rollbacks so far in this run
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        row = {k: v for k, v in asdict(self).items() if v not in (None, "", {})}
        for key in ("loss", "grad_norm"):
            if key in row:
                row[key] = _number(row[key])
        return json.dumps(row)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StepEvent:
        known = {k: row[k] for k in cls.__dataclass_fields__ if k in row and k != "extra"}
        extra = {k: v for k, v in row.items() if k not in cls.__dataclass_fields__}
        return cls(**known, extra={**row.get("extra", {}), **extra})


def append_event(folder: RunFolder, event: StepEvent) -> None:
    """One JSON line in ``steps.jsonl``; call on rank 0 only."""
    folder.steps.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.steps, "a") as f:
        f.write(event.to_json() + "\n")


@dataclass(frozen=True)
class StepLog:
    events: list[StepEvent]

    @property
    def counts(self) -> Counter:
        return Counter(e.kind for e in self.events)

    def of(self, kind: str) -> list[StepEvent]:
        return [e for e in self.events if e.kind == kind]

    def summary(self) -> str:
        """``2 steps skipped (3, 6); 1 rollback (at step 10 to step-8, data of 2 steps skipped)``, or ``""``."""
        parts = []
        skipped = self.of(SKIPPED)
        if skipped:
            steps = ", ".join(str(e.step) for e in skipped[:8]) + (", ..." if len(skipped) > 8 else "")
            parts.append(f"{len(skipped)} step{'s' if len(skipped) != 1 else ''} skipped ({steps})")
        rolled = self.of(ROLLED_BACK)
        if rolled:
            where = ", ".join(f"at step {e.step} to step-{e.checkpoint_step}, data of {e.skipped_steps} steps skipped"
                              for e in rolled[:3])  # fmt: skip
            parts.append(f"{len(rolled)} rollback{'s' if len(rolled) != 1 else ''} ({where})")
        refused = self.of(SAVE_REFUSED)
        if refused:
            parts.append(f"{len(refused)} checkpoint save(s) refused (weights not finite)")
        return "; ".join(parts)


def read_events(folder: RunFolder) -> StepLog:
    """Every event of a run, oldest first (a damaged line is passed over)."""
    events = []
    if folder.steps.is_file():
        for line in folder.steps.read_text().splitlines():
            try:
                row = json.loads(line)
                events.append(StepEvent.from_row(row))
            except (json.JSONDecodeError, TypeError):
                continue
    return StepLog(events)


# ---------------------------------------------------------------- health marks


def write_health(step_folder: str | os.PathLike, mark: dict[str, Any]) -> None:
    """``health.json`` in a checkpoint's folder, written whole (temp file + rename)."""
    path = health_file(step_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(mark, indent=1) + "\n")
    os.replace(tmp, path)


def read_health(step_folder: str | os.PathLike) -> dict[str, Any] | None:
    """A checkpoint's health mark, or None (saved without the guard, or by an older tinytitan)."""
    path = health_file(step_folder)
    try:
        mark = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return mark if isinstance(mark, dict) else None


def is_healthy(step_folder: str | os.PathLike) -> bool:
    """Healthy, or unknown (no mark): only a mark that says otherwise makes a checkpoint suspect."""
    mark = read_health(step_folder)
    return mark is None or bool(mark.get("healthy", True))


def describe_health(mark: dict[str, Any] | None) -> str:
    """What ``tinytitan checkpoint inspect`` prints."""
    if mark is None:
        return "unknown (no health.json: saved without [guard])"
    skipped = mark.get("skipped_since_previous", 0)
    since = f"{skipped} step{'s' if skipped != 1 else ''} skipped since the previous checkpoint"
    if mark.get("healthy"):
        loss = mark.get("loss")
        return f"healthy (weights finite, loss {'n/a' if loss is None else f'{loss:.4f}'}; {since})"
    why = "weights not finite" if not mark.get("finite", True) else "saved during a run of skipped steps"
    return f"suspect ({why}; {since})"

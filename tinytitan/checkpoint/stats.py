"""What a run recorded about a checkpoint: its step and tokens, and the loss logged beside it.

The checkpoint holds ``train_state`` (step, and the tokens of one data-parallel rank); the run
folder's ``metrics.jsonl`` holds the loss and the global token count at each logged step.
``checkpoint inspect``, the export's model card and ``eval`` report both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tinytitan.run.folder import RunFolder


@dataclass
class RunStats:
    """What the model card reports about training; any field may be unknown.

    torchtitan's ``train_state.ntokens_seen`` counts the tokens of one
    data-parallel rank; the global count is the ``n_tokens_seen`` that the
    metrics log (summed over ranks) recorded at the checkpoint's step.
    """

    step: int | None = None
    ntokens_seen: int | None = None  # global, from metrics.jsonl
    ntokens_per_rank: int | None = None  # train_state.ntokens_seen
    last_loss: float | None = None
    loss_step: int | None = None


def read_metrics_at(metrics_path: Path, step: int | None) -> dict:
    """``last_loss``/``loss_step`` of the last logged step at or before ``step``, ``ntokens_seen`` at ``step``."""
    found: dict = {}
    if not metrics_path.is_file():
        return found
    for line in metrics_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        at = row.get("step")
        if at is None or (step is not None and at > step):
            continue
        if row.get("loss") is not None and at >= found.get("loss_step", -1):  # a resumed run's later rows win
            found.update(last_loss=float(row["loss"]), loss_step=int(at))
        if at == step and row.get("n_tokens_seen") is not None:
            found["ntokens_seen"] = int(row["n_tokens_seen"])
    return found


def checkpoint_stats(checkpoint) -> RunStats:
    """Step and tokens from the checkpoint, loss and global tokens from ``<dump>/metrics.jsonl`` next to it."""
    state = checkpoint.train_state()
    run = RunFolder.at(checkpoint.path.parent.parent)  # <dump>/checkpoint/step-N
    logged = read_metrics_at(run.metrics, state["step"])
    return RunStats(step=state["step"], ntokens_per_rank=state["ntokens_seen"], **logged)

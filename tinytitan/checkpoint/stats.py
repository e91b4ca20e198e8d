"""What a run recorded about a checkpoint: its step and tokens, and the loss logged beside it.

The checkpoint holds ``train_state`` (step, and the tokens of one data-parallel rank); the run
folder's ``metrics.jsonl`` holds the loss and the global token count at each logged step, the tokens
of each source and, with ``[[data.stages]]``, each stage's first step and tokens per source.
``checkpoint inspect``, the export's model card and ``eval`` report them.

A continued run (``[checkpoint] initial_load_path``) starts from another run's weights with its own
counters at 0: ``parent_of`` follows the chain of parents (their checkpoints and records), so a card
can say what the model was initialised from and how many tokens it has seen in all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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
    source_tokens: dict[str, int] = field(default_factory=dict)  # data/tokens/<source>, all ranks
    stage_first_step: dict[str, int] = field(default_factory=dict)  # data/stage/<name>/first_step
    stage_tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # data/stage/<name>/tokens/<source>
    counted_at: int | None = None  # the logged step the data counters above are from (at or before ``step``)


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
        counters = _data_counters(row)
        if counters and at >= found.get("counted_at", -1):
            firsts = {
                **found.get("stage_first_step", {}),
                **counters["stage_first_step"],
            }  # each row: the current stage's
            found.update(counters, stage_first_step=firsts, counted_at=int(at))
    return found


def _data_counters(row: dict) -> dict:
    """The data counters of one metrics row: tokens per source, and per stage its first step and tokens."""
    sources: dict[str, int] = {}
    firsts: dict[str, int] = {}
    stages: dict[str, dict[str, int]] = {}
    for key, value in row.items():
        parts = key.split("/")
        if not isinstance(value, (int, float)) or parts[0] != "data":
            continue
        if len(parts) == 3 and parts[1] == "tokens":
            sources[parts[2]] = int(value)
        elif len(parts) == 4 and parts[1] == "stage" and parts[3] == "first_step":
            firsts[parts[2]] = int(value)
        elif len(parts) == 5 and parts[1] == "stage" and parts[3] == "tokens":
            stages.setdefault(parts[2], {})[parts[4]] = int(value)
    if not (sources or firsts or stages):
        return {}
    return {"source_tokens": sources, "stage_first_step": firsts, "stage_tokens": stages}


def checkpoint_stats(checkpoint) -> RunStats:
    """Step and tokens from the checkpoint, loss and global tokens from ``<dump>/metrics.jsonl`` next to it."""
    state = checkpoint.train_state()
    run = RunFolder.at(checkpoint.path.parent.parent)  # <dump>/checkpoint/step-N
    logged = read_metrics_at(run.metrics, state["step"])
    return RunStats(step=state["step"], ntokens_per_rank=state["ntokens_seen"], **logged)


@dataclass
class Parent:
    """The checkpoint a continued run was initialised from (weights only), as its own run recorded it."""

    path: str  # initial_load_path, as the run's record has it
    step: int | None = None
    ntokens_seen: int | None = None  # the parent run's own global tokens at that step
    recorded: bool = False  # its run folder holds a run.toml
    description: str = ""
    sources: list[tuple[str, float, str]] = field(default_factory=list)  # (name, share, path) of its data
    stages: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # the Hub datasets its sources declare
    parent: Parent | None = None  # what the parent itself was initialised from

    def total_tokens(self) -> int | None:
        """Tokens the weights at this checkpoint have seen, its parents' included (None: some count unknown)."""
        earlier = self.parent.total_tokens() if self.parent is not None else 0
        return None if self.ntokens_seen is None or earlier is None else self.ntokens_seen + earlier

    def chain(self) -> list[Parent]:
        return [self, *(self.parent.chain() if self.parent is not None else [])]


MAX_PARENTS = 16  # a chain this long is followed no further (and a loop ends)


def parent_of(trained, depth: int = 0) -> Parent | None:
    """The parent of a run (``trained``: a ``TrainedRun``) whose config sets ``[checkpoint] initial_load_path``."""
    if trained is None or depth >= MAX_PARENTS:
        return None
    ckpt = trained.job.checkpoint
    path = ckpt.initial_load_path
    if not path or ckpt.initial_load_in_hf:
        return None
    from tinytitan.errors import TinytitanError
    from tinytitan.run.record import read_trained_run

    parent = Parent(path=str(path))
    try:
        from tinytitan.checkpoint.reader import open_checkpoint

        stats = checkpoint_stats(open_checkpoint(path, check=False))
        parent.step, parent.ntokens_seen = stats.step, stats.ntokens_seen
    except (TinytitanError, OSError, ValueError, KeyError, RuntimeError):
        return parent  # gone or unreadable: only its path is known
    try:
        record = read_trained_run(path)
    except TinytitanError:
        record = None
    if record is not None and record.recorded:
        parent.recorded = True
        parent.description = record.description
        parent.sources = record.sources()
        parent.stages = [getattr(s, "name", "") for s in record.stages()]
        parent.datasets = [h for h in (s.declared_hub_id() for s in record.job.data.sources) if h]
        parent.parent = parent_of(record, depth + 1)
    return parent

"""Scalars of a run, read back from its TensorBoard event files.

A run folder holds ``tb/<timestamp>/events.out.tfevents.*``, one timestamp folder
per (re)start. All of them are read, oldest first, so a resumed run's later
values win for the steps it repeated.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tinytitan.errors import TinytitanError

EVENT_GLOB = "events.out.tfevents.*"

TRAIN_LOSS = "loss_metrics/global_avg_loss"
VALIDATION_LOSS = "validation_metrics/loss"
LR = "lr"
TPS = "throughput(tps)"
TOKENS_SEEN = "n_tokens_seen"
PER_SOURCE_VALIDATION = re.compile(r"^validation/(.+)/loss$")  # tinytitan.data.heldout's tags
STAGE_FIRST_STEP = re.compile(r"^data/stage/([^/]+)/first_step$")  # tinytitan.rank.metrics, with [[data.stages]]

Series = list[tuple[int, float]]


def event_files(run_dir: str | os.PathLike) -> list[Path]:
    """Event files under a run folder (or its tb/ folder, or one timestamp folder), oldest first."""
    root = Path(run_dir)
    if not root.exists():
        raise TinytitanError(f"run folder {root} does not exist")
    files = [p for p in root.rglob(EVENT_GLOB) if p.is_file()]
    if not files:
        raise TinytitanError(
            f"no TensorBoard event files under {root}: pass a run's dump folder, trained with "
            "[metrics] enable_tensorboard = true"
        )
    return sorted(files, key=lambda p: (p.stat().st_mtime, str(p)))


def read_scalars(run_dir: str | os.PathLike) -> dict[str, Series]:
    """tag -> [(step, value)] sorted by step, merged over every event file of the run."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    merged: dict[str, dict[int, float]] = {}
    for path in event_files(run_dir):
        acc = EventAccumulator(str(path), size_guidance={SCALARS: 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            points = merged.setdefault(tag, {})
            for event in acc.Scalars(tag):
                points[event.step] = event.value
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def eval_tags(tags) -> list[str]:
    """Benchmark scalars (``eval/<task>/<metric>``, from ``tinytitan eval tasks --run`` or in-loop ``[eval]``)."""
    return sorted(t for t in tags if t.startswith("eval/"))


def validation_loss_tags(tags) -> dict[str, str]:
    """label -> tag: the overall validation loss, then one per source (``validation/<source>/loss``)."""
    found = {"validation": VALIDATION_LOSS} if VALIDATION_LOSS in tags else {}
    for tag in sorted(tags):
        match = PER_SOURCE_VALIDATION.match(tag)
        if match:
            found[f"validation {match.group(1)}"] = tag
    return found


def stage_starts(scalars: dict[str, Series]) -> dict[str, int]:
    """stage name -> its first step, for the stages the run logged (``data/stage/<name>/first_step``)."""
    found = {}
    for tag, series in scalars.items():
        match = STAGE_FIRST_STEP.match(tag)
        if match and series:
            found[match.group(1)] = int(series[-1][1])
    return dict(sorted(found.items(), key=lambda kv: kv[1]))

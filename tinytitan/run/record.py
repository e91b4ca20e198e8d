"""A run's record, ``<dump_folder>/run.toml``: the job config its ranks ran with, and one segment per launch.

The launcher (``tinytitan.launcher.record``) writes it before torchrun starts: the config as
every rank reads it (the TOML file plus the overrides, input paths made absolute), written out
key by key, and under ``[run]`` one ``[[run.segments]]`` table per launch (command line,
versions, git commit, tokenizer hash, data plan fingerprint, the step it started from, what
changed since the launch before). It is a job config itself: ``tinytitan.config.load_job_config``
reads it, and ``tinytitan train --config <dump>/run.toml`` runs the same job again.

``export``, ``eval``, ``generate`` and ``checkpoint inspect`` read it from the checkpoint's run
folder (:func:`read_trained_run`); a ``--config`` given as well overrides it, with one warning per
key that changes the model or its card.

No ``from __future__ import annotations``: ``Run`` and ``Segment`` are merged into torchtitan's
JobConfig (``tinytitan.job_config``), and tyro must see real types.
"""

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinytitan.errors import TinytitanError
from tinytitan.run.folder import RUN_FILE, RunFolder
from tinytitan.run.toml_text import flatten, short, to_toml


@dataclass
class Segment:
    """One launch of a run (the first, then one per resume)."""

    start_step: int = 0
    """The step it started from: its newest complete checkpoint (0: a new run)."""
    started: str = ""
    """When the launcher started it (UTC, ISO 8601)."""
    command: str = ""
    """The command line, with the launcher's environment variables, as it can be run again."""
    config_file: str = ""
    """The TOML file the config came from (the overrides are part of the command)."""
    world_size: int = 0
    """Training processes over all nodes."""
    device: str = ""
    """'cpu', or the GPU's name."""
    precision: str = ""
    """What the ranks computed in: 'float32' on CPU, else the parameters' mixed-precision dtype."""
    tinytitan_version: str = ""
    torchtitan_version: str = ""
    torch_version: str = ""
    git_commit: str = ""
    """The checkout's commit ('+dirty' with uncommitted changes); empty outside a git checkout."""
    tokenizer_hash: str = ""
    """sha256 of the tokenizer (vocabulary, merges, BOS/EOS), as prepared shards record it."""
    data_fingerprint: str = ""
    """Hash of the data plan (files, sizes, parts, seed, lanes): what a resume checks."""
    changed: list[str] = field(default_factory=list)
    """Config keys that differ from the segment before: 'training.steps: 300 -> 600'."""


def _segment_from_dict(index: int, value: Any) -> Segment:
    if isinstance(value, Segment):
        return value
    if not isinstance(value, dict):
        raise TinytitanError(f"[[run.segments]] entry {index} is a {type(value).__name__}; write it as a table")
    known = {f.name for f in dataclasses.fields(Segment)}
    return Segment(**{k: v for k, v in value.items() if k in known})  # a newer tinytitan's keys: ignored


@dataclass
class Run:
    """``[run]``: what the launcher recorded in ``<dump_folder>/run.toml``. Leave it out of a config you
    write: the launcher keeps its own record of every run."""

    segments: list[Segment] = field(default_factory=list)
    """One [[run.segments]] table per launch."""

    def __post_init__(self):
        self.segments = [_segment_from_dict(i, s) for i, s in enumerate(self.segments)]

    def segment_at(self, step: int | None) -> Segment | None:
        """The launch that trained ``step`` (the last launch for None)."""
        if not self.segments:
            return None
        if step is None:
            return self.segments[-1]
        before = [s for s in self.segments if s.start_step < step]
        return before[-1] if before else self.segments[0]


# ---------------------------------------------------------------- paths


def absolute_paths(job_config):
    """Makes the config's local input paths (and initial_load_path) and its dump folder absolute (Hub ids stay),
    so a record read from another working directory names the same files. Returns ``job_config``."""

    def absolute(path: str) -> str:
        return str(Path(path).resolve()) if path and "://" not in path and os.path.exists(path) else path

    job_config.job.dump_folder = str(Path(job_config.job.dump_folder).resolve())
    job_config.model.hf_assets_path = absolute(job_config.model.hf_assets_path)
    job_config.checkpoint.initial_load_path = absolute(job_config.checkpoint.initial_load_path)
    data = getattr(job_config, "data", None)
    if data is not None:
        data.prepared_dir = absolute(data.prepared_dir)
        for source in data.sources:
            source.path = absolute(source.path)
    return job_config


# ---------------------------------------------------------------- finding a run's record


def record_of(where: str | os.PathLike) -> Path | None:
    """``run.toml`` of the run that ``where`` belongs to: a run folder, its checkpoint folder, a step-N folder."""
    start = Path(where).resolve()
    for folder in (start, *list(start.parents)[:3]):
        candidate = folder / RUN_FILE
        if candidate.is_file() and _holds(candidate, start):
            return candidate
    return None


def _holds(record: Path, where: Path) -> bool:
    """Whether ``where`` lies in the run folder of ``record`` (a run.toml copied elsewhere does not count)."""
    run_folder = record.parent
    return where == run_folder or run_folder in where.parents


def read_record(path: str | os.PathLike):
    """The JobConfig a run.toml holds (``[run]`` included), read as every config is read."""
    from tinytitan.config import load_job_config
    from tinytitan.run.record_check import record_problem

    problem = record_problem(path)  # a cut copy parses, and torchtitan would fill in its defaults
    if problem is not None:
        raise TinytitanError(f"the run record {path} is incomplete or damaged: {problem} (a cut copy or a full disk)")
    try:
        return load_job_config(path)
    except TinytitanError as e:
        raise TinytitanError(f"the run record {path} cannot be read ({e})") from None


# ---------------------------------------------------------------- what a run trained

# Keys that change the model or what its card says: a --config that disagrees with the record on one is named.
MODEL_AND_CARD_KEYS = (
    "model.flavor",
    "model.hf_assets_path",
    "training.seq_len",
    "training.mixed_precision_param",
    "job.description",
    "data.sources",
    "data.stages",
)


@dataclass
class TrainedRun:
    """What a run trained, as ``export``, ``eval``, ``generate`` and ``checkpoint inspect`` need it.

    From the run's record (``recorded``), or from a ``--config`` TOML (a run from before records, or an
    explicit override).
    """

    job: Any  # the JobConfig (torchtitan's, with tinytitan's sections)
    path: Path  # run.toml, or the --config file
    recorded: bool
    run: Run = field(default_factory=Run)  # the record's launches (also under a --config override)
    record: Any = None  # the recorded JobConfig, where a --config overrides it

    def disagreements(self, keys: tuple[str, ...]) -> list[str]:
        """``key = value, but the run recorded value`` for each of ``keys`` where a --config overrides the
        record and differs from it."""
        if self.record is None:
            return []
        a, b = flatten(self.record), flatten(self.job)
        return [f"{k} = {short(b.get(k))}, but the run recorded {short(a.get(k))}"
                for k in keys if a.get(k) != b.get(k)]  # fmt: skip

    @property
    def flavor(self) -> str:
        return self.job.model.flavor

    @property
    def tokenizer_dir(self) -> Path | None:
        return Path(self.job.model.hf_assets_path) if self.job.model.hf_assets_path else None

    @property
    def seq_len(self) -> int:
        return self.job.training.seq_len

    @property
    def description(self) -> str:
        return self.job.job.description

    def segment_at(self, step: int | None) -> Segment | None:
        return self.run.segment_at(step)

    def sources(self) -> list[tuple[str, float, str]]:
        """(name, share of the training tokens, path) per data source; with ``[[data.stages]]`` the stages'
        weights averaged by each stage's length in steps (the mean of the stages' weights where the world
        size, and so the stages' lengths, is unknown)."""
        data = self.job.data
        shares = data.mixture_weights()
        segment = self.segment_at(None)
        if data.stages and segment is not None and segment.world_size > 0:
            from tinytitan.data.stages import run_spans

            try:
                spans = run_spans(self.job, segment.world_size)
            except TinytitanError:
                spans = []
            total = sum(span.steps() for span in spans)
            if total:
                shares = {
                    s.name: sum(span.weights[s.name] * span.steps() for span in spans) / total for s in data.sources
                }
        return [(s.name, shares[s.name], s.path) for s in data.sources]

    def stages(self) -> list:
        """``[[data.stages]]`` where the config has them (``name``, ``until_tokens``, ``weights``, ``lr``)."""
        return list(getattr(self.job.data, "stages", None) or [])

    def precision(self, step: int | None = None) -> str:
        segment = self.segment_at(step)
        if segment is not None and segment.precision:
            return segment.precision
        training = self.job.training
        if training.mixed_precision_param == "float32":
            return "float32"
        return f"{training.mixed_precision_param} mixed precision (float32 master weights)"

    def data_parallel_ranks(self, step: int | None = None) -> int | None:
        """The run's data-parallel ranks at ``step`` (its validator's), when the record knows its world size."""
        segment = self.segment_at(step)
        if segment is None or segment.world_size < 1:
            return None
        p = self.job.parallelism
        model_ranks = p.tensor_parallel_degree * p.pipeline_parallel_degree * p.context_parallel_degree
        return max(1, segment.world_size // max(1, model_ranks))

    def config_text(self) -> str:
        """The config as TOML, only the keys that differ from the defaults (what a model card shows)."""
        return to_toml(self.job, only_changed=True, skip=("run",))


def edited_since_launch(record: Path) -> str | None:
    """One line when ``record`` differs from what the launcher last wrote (``RunFolder.record_digest``)."""
    import hashlib

    try:
        written = RunFolder.at(record.parent).record_digest.read_text().strip()
        now = hashlib.sha256(record.read_bytes()).hexdigest()
    except OSError:
        return None  # a run launched before the digest was kept
    if now == written:
        return None
    return (
        f"{record} was edited since the launcher wrote it (its sha256 differs from the one kept in "
        f"{RunFolder.at(record.parent).record_digest.name}): what it says now is what is read"
    )


def warn(line: str) -> None:
    """``tinytitan: warning: LINE`` on stderr: how the readers of a record say what they noticed."""
    print(f"tinytitan: warning: {line}", file=sys.stderr, flush=True)


def read_trained_run(
    where: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    *,
    required: str | None = None,
    warn: Callable[[str], None] = warn,
) -> TrainedRun | None:
    """What the run of ``where`` (a checkpoint, or a run folder) trained: its run.toml, or ``config``.

    ``config`` overrides the record; each key of ``MODEL_AND_CARD_KEYS`` where the two disagree is
    named by ``warn``. Without either: None, or with ``required`` (what needs it, e.g. ``--checkpoint``)
    one line saying to pass ``--config``.
    """
    from tinytitan.config import load_job_config
    from tinytitan.run.record_check import copied_from

    if where is not None:
        from tinytitan.run.hold import hold_checkpoint, missing_checkpoint

        if not Path(where).exists() or (hold_checkpoint(where) and not Path(where).exists()):
            raise TinytitanError(missing_checkpoint(where))  # not "has no run record": it is not there
    record = record_of(where) if where is not None else None
    if config is None and record is None:
        if required is None:
            return None
        if where is None:
            raise TinytitanError(f"{required} needs --config TOML, the training config (flavor, tokenizer, data)")
        raise TinytitanError(
            f"{required} {where} has no run record ({RUN_FILE} in its run folder, written by `tinytitan train`): "
            "pass --config TOML, the training config (flavor, tokenizer, data)"
        )
    try:
        recorded = read_record(record) if record is not None else None
    except TinytitanError as e:
        if config is None:
            raise TinytitanError(f"{e}: restore it, or pass --config TOML, the training config") from None
        warn(f"{e}; using --config {config}")
        recorded = None
    if recorded is not None and (origin := copied_from(record, recorded.job.dump_folder, where)) is not None:
        line = f"the run record {record} was copied from the run in {origin} (its job.dump_folder), whose checkpoints differ"
        if config is None:
            raise TinytitanError(f"{line}: restore this run's own record, or pass --config TOML, the training config")
        warn(f"{line}; using --config {config}")
        recorded = None
    if recorded is not None and (edit := edited_since_launch(record)) is not None:
        warn(edit)
    if config is None:
        return TrainedRun(recorded, record, recorded=True, run=recorded.run)
    job = absolute_paths(load_job_config(config))
    trained = TrainedRun(job, Path(job.job.config_file), recorded=False, run=recorded.run if recorded else job.run,
                         record=recorded)  # fmt: skip
    for line in trained.disagreements(MODEL_AND_CARD_KEYS):
        warn(f"--config {config} sets {line} ({record}); using --config's")
    return trained

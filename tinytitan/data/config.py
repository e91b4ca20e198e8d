"""The ``[data]`` section of the job config: the data mixture as configuration.

A TOML job config describes the mixture with one ``[[data.sources]]`` table per
source::

    [data]
    seed = 1234
    format = "text"                     # or "tokens" (read shards from prepared_dir)

    [[data.sources]]
    name = "slimpajama"
    path = "data/SlimPajama-627B"
    files = "train/chunk*/*.jsonl.zst"
    weight = 0.693584
    exclude = { "meta.redpajama_set_name" = ["RedPajamaGithub"] }

or, for a recipe that changes the mixture over the run, sources without ``weight`` and one
``[[data.stages]]`` table per stage (``Stage``: a name, the global tokens at which it ends, its
weights, and what it does to the learning rate).

torchtitan's ConfigManager hands the tables to ``Data`` as plain dicts;
``Data.__post_init__`` turns them into ``Source`` and ``Stage`` objects (rejecting unknown
keys), which also keeps tyro's CLI overrides working
(``--data.seed 7``, ``--data.sources.0.weight 0.5``, ``--data.stages.0.until_tokens 1000000``).

``Data.validate`` checks the values (no I/O); ``tinytitan.data.listing`` lists the files a
source names, and ``tinytitan.data.preflight`` adds the checks that read data, before any
process starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from tinytitan.errors import TinytitanError

FORMATS = ("text", "tokens")
ON_ERROR = ("skip", "fail")
STAGE_LR = ("", "stable", "decay")  # a stage's `lr`: "" leaves the schedule to [lr_scheduler]
# File name endings the readers understand, longest first.
SUFFIXES = (".jsonl.zst", ".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet")

SLIMPAJAMA_LAYOUT = (
    "expected e.g. path = 'data/SlimPajama-627B' holding train/chunk1/example_train_0.jsonl.zst "
    "(files = 'train/chunk*/*.jsonl.zst'), or path = 'data/starcoderdata' holding "
    "python/train-00000-of-00059.parquet (files = '*/train-*.parquet')"
)


@dataclass
class Source:
    """One source of the mixture: a local folder (or a Hub dataset id) and a glob inside it."""

    name: str = ""
    """Short name, used in metrics (tokens/<name>) and checkpoints. Unique."""
    path: str = ""
    """A local folder (relative paths resolve against the working directory) or a Hub dataset id
    ('org/name' or 'hf://datasets/org/name')."""
    files: str = ""
    """Glob inside `path` selecting the training files (.jsonl, .jsonl.zst, .json.gz, .parquet)."""
    text_field: str = "text"
    """Record field holding the document text (e.g. 'content' for Starcoderdata)."""
    weight: float | None = None
    """Share of training *tokens* drawn from this source (normalized over all sources); unset: 1.0.
    With [[data.stages]] the stages give the weights and a source has none."""
    exclude: dict[str, list[str]] = field(default_factory=dict)
    """Drop documents whose field (dotted path into the record) has one of these values."""
    validation_files: str = ""
    """Glob inside `path` with held-out files for validation (SlimPajama: 'validation/chunk*/*.jsonl.zst')."""
    validation_docs: int = 0
    """Hold out the first N documents of the first training file for validation (and never train on them)."""
    hub_id: str = ""
    """The Hugging Face dataset this source's files come from ('org/name'), as you declare it: named in an
    export's model card metadata (`datasets:`). Empty: none named (never guessed from the folder's name)."""
    license: str = ""
    """The license of this source's data as you state it (e.g. 'odc-by', 'other'): named in the model card
    next to the model's own license. Empty: the card says it was not declared."""

    def declared_hub_id(self) -> str:
        """The Hub dataset this source declares: ``hub_id``, or a path written as ``hf://datasets/org/name``
        ('' when neither: a local folder's name is never taken for one)."""
        prefix = "hf://datasets/"
        if not self.hub_id and self.path.startswith(prefix):
            return "/".join(self.path[len(prefix) :].strip("/").split("/")[:2])
        return self.hub_id

    def validate(self) -> None:
        """The source's own values (its name is checked by ``Data.validate``, which knows the others)."""

        def fail(what: str, fix: str) -> TinytitanError:
            return TinytitanError(f"data source {self.name!r} (path {self.path!r}): {what}; {fix}")

        weight = self.weight
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf
        ):
            raise fail(f"weight = {weight!r} is not a positive number", "give every source a finite weight > 0")
        if not self.path:
            raise fail("no path", "set path to a local folder or a Hub dataset id")
        if not self.files:
            raise fail("no files glob", f"set files to a glob inside path ({SLIMPAJAMA_LAYOUT})")
        if not self.text_field:
            raise fail("empty text_field", "name the record field with the text ('text', 'content')")
        if self.validation_docs < 0:
            raise fail(f"validation_docs = {self.validation_docs}", "use 0 (none) or a positive number")
        if self.validation_files and self.validation_docs:
            raise fail("both validation_files and validation_docs are set", "choose one held-out split")
        if self.hub_id and not re.fullmatch(r"[\w.-]+/[\w.-]+", self.hub_id):
            raise fail(f"hub_id = {self.hub_id!r} is not a Hub dataset id", "write it as 'org/name', or leave it out")


@dataclass
class Stage:
    """One stage of a recipe: a mixture of the sources until the run has seen ``until_tokens`` tokens."""

    name: str = ""
    """Short name, shown in the step log, the metrics (data/stage/<name>/...) and checkpoints. Unique."""
    until_tokens: int | None = None
    """Global tokens seen (all ranks) when this stage ends; the stage ends at the first optimizer step
    boundary at or after it. Only the last stage may omit it: it runs to training.steps."""
    weights: dict[str, float] = field(default_factory=dict)
    """Token weights of the sources in this stage, normalized over the stage; a source not named gets 0."""
    lr: str = ""
    """'decay': the learning rate decays over this stage (the last one) to lr_scheduler.min_lr_factor;
    'stable': it holds after warmup; '' (default): as the other stages say, or [lr_scheduler] alone."""

    def validate(self, index: int, sources: list[str]) -> None:
        """The stage's own values (the order of the stages is checked by ``Data.validate``)."""
        label = f"data stage {self.name!r}" if self.name else f"[[data.stages]] entry {index}"
        if not self.name or not re.fullmatch(r"[\w.-]+", self.name):
            raise TinytitanError(f"{label} needs a name of letters, digits, '_', '-', '.' (e.g. name = 'cooldown')")
        if not self.weights:
            raise TinytitanError(f"{label} has no weights; set weights = {{ {sources[0]} = 1.0 }} (source = weight)")
        for source, weight in self.weights.items():
            if source not in sources:
                raise TinytitanError(
                    f"{label}: weights name source {source!r}, which no [[data.sources]] table defines "
                    f"(sources: {', '.join(sources)}); fix the name or add the source"
                )
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
                raise TinytitanError(f"{label}: weight of {source!r} = {weight!r}; use a finite number >= 0")
        if not any(w > 0 for w in self.weights.values()):
            raise TinytitanError(f"{label}: every weight is 0; give at least one source a weight > 0")
        if self.until_tokens is not None and self.until_tokens < 1:
            raise TinytitanError(f"{label}: until_tokens = {self.until_tokens}; use a positive number of tokens")
        if self.lr not in STAGE_LR:
            raise TinytitanError(f"{label}: lr = {self.lr!r}; use 'stable', 'decay' or leave it out")


def _table_from_dict(cls, kind: str, index: int, value: Any):
    """A [[data.sources]] or [[data.stages]] table (a dict from TOML) as its dataclass; unknown keys named."""
    if isinstance(value, cls):
        return value
    keys = tuple(f.name for f in dataclasses.fields(cls))
    if not isinstance(value, dict):
        raise TinytitanError(
            f"[[data.{kind}s]] entry {index} is a {type(value).__name__}; write it as a TOML table "
            f"([[data.{kind}s]] with {'/'.join(keys[:4])} keys)"
        )
    unknown = sorted(set(value) - set(keys))
    if unknown:
        label = value.get("name") or f"#{index}"
        raise TinytitanError(
            f"data {kind} {label!r}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(keys)}"
        )
    return cls(**value)


@dataclass
class Data:
    """The training data mixture (see docs/data.md)."""

    seed: int = 1234
    """Seed of the file shuffling of every pass and of the mixture sampler."""
    format: str = "text"
    """'text': read and tokenize the sources while training; 'tokens': read shards made by
    `tinytitan data prepare` from `prepared_dir`."""
    prepared_dir: str = "data/prepared"
    """Folder written by `tinytitan data prepare` (used when format = 'tokens')."""
    on_error: str = "skip"
    """A corrupt or unreadable file: 'skip' (warn, count, report) or 'fail' (stop the run)."""
    lanes: int = 256
    """Each source is read through this many lanes (fixed slices of every pass). A lane is the
    unit of sharding and of resume; dp ranks x loader workers must not exceed it. Changing it
    starts the data stream afresh."""
    encode_batch_bytes: int = 1 << 20
    """Text read and tokenized at once per lane (bytes); bigger batches tokenize faster."""
    sources: list[Source] = field(default_factory=list)
    """One [[data.sources]] table per source. No sources: the loader is not configured."""
    stages: list[Stage] = field(default_factory=list)
    """One [[data.stages]] table per stage of the recipe, in order; none: one mixture (the sources' weights)."""
    allow_stage_change: bool = False
    """Resume although a stage that has already begun was changed since the checkpoint (its weights, end or
    name); without it such a resume is refused. Stages that have not begun may always change."""

    def __post_init__(self):
        self.sources = [_table_from_dict(Source, "source", i, s) for i, s in enumerate(self.sources)]
        self.stages = [_table_from_dict(Stage, "stage", i, s) for i, s in enumerate(self.stages)]

    def stage_weights(self) -> list[dict[str, float]]:
        """Every stage's weights, normalized, with every source (0 where the stage does not name it).
        Without stages: one mixture, the sources' weights (unset: 1.0)."""
        if not self.stages:
            raw = [{s.name: 1.0 if s.weight is None else float(s.weight) for s in self.sources}]
        else:
            raw = [{s.name: float(stage.weights.get(s.name, 0.0)) for s in self.sources} for stage in self.stages]
        return [{name: w / sum(ws.values()) for name, w in ws.items()} for ws in raw]

    def mixture_weights(self) -> dict[str, float]:
        """One weight per source for what has no stage (the held-out ``validation/loss``): the mean of the
        stages' normalized weights, or the sources' weights when there are no stages."""
        per_stage = self.stage_weights()
        return {s.name: sum(ws[s.name] for ws in per_stage) / len(per_stage) for s in self.sources}

    # ------------------------------------------------------------ checks (pure: no file is read)
    def validate(self) -> None:
        """One TinytitanError naming the key and the fix; value types are checked when the config is read
        (``tinytitan.config.check_value_types``). Which files the sources name: ``tinytitan.data.listing``."""
        if self.format not in FORMATS:
            raise TinytitanError(f"data.format = {self.format!r}; use one of {', '.join(map(repr, FORMATS))}")
        if self.on_error not in ON_ERROR:
            raise TinytitanError(f"data.on_error = {self.on_error!r}; use 'skip' or 'fail'")
        if self.lanes < 1:
            raise TinytitanError(f"data.lanes = {self.lanes}; use a positive number (default 256)")
        if self.encode_batch_bytes < 1:
            raise TinytitanError("data.encode_batch_bytes must be positive (default 1048576)")
        if not self.sources:
            raise TinytitanError(
                "the [data] section has no sources; add [[data.sources]] tables with name, path, files and weight"
            )
        seen: set[str] = set()
        for i, s in enumerate(self.sources):
            if not s.name or not re.fullmatch(r"[\w.-]+", s.name):
                raise TinytitanError(
                    f"[[data.sources]] entry {i} (path {s.path!r}) needs a name of letters, digits, '_', '-', '.'"
                )
            if s.name in seen:
                raise TinytitanError(f"data source name {s.name!r} is used twice; give every source its own name")
            seen.add(s.name)
            s.validate()
        if self.stages:
            self._validate_stages()

    def _validate_stages(self) -> None:
        """The stages alone; that their ends fall inside the run needs its length (``tinytitan.data.stages``)."""
        weighted = [s.name for s in self.sources if s.weight is not None]
        if weighted:
            raise TinytitanError(
                f"data source {weighted[0]!r} has a weight, but [[data.stages]] give the weights: remove weight "
                "from every [[data.sources]] table and set each stage's weights = { source = weight }"
            )
        names = [s.name for s in self.sources]
        seen: set[str] = set()
        for i, stage in enumerate(self.stages):
            stage.validate(i, names)
            if stage.name in seen:
                raise TinytitanError(f"data stage name {stage.name!r} is used twice; give every stage its own name")
            seen.add(stage.name)
        *earlier, last = self.stages
        for stage in earlier:
            if stage.until_tokens is None:
                raise TinytitanError(
                    f"data stage {stage.name!r} has no until_tokens; every stage but the last needs the global "
                    "tokens at which it ends (the last one runs to training.steps)"
                )
            if stage.lr == "decay":
                raise TinytitanError(
                    f"data stage {stage.name!r}: lr = 'decay' on a stage that is not the last; the decay runs to "
                    f"the end of the run: put it on the last stage ({last.name!r}) or use lr = 'stable'"
                )
        ends = [s.until_tokens for s in self.stages if s.until_tokens is not None]
        for (a, b), stage in zip(zip(ends, ends[1:], strict=False), self.stages[1:], strict=False):
            if b <= a:
                raise TinytitanError(
                    f"data stage {stage.name!r}: until_tokens = {b:,} is not after the previous stage's end "
                    f"({a:,}); stage ends must strictly increase"
                )


def require_lanes(lanes: int, readers: int) -> None:
    """Every data reader (dp rank x loader worker) needs a lane of every source: the launcher's start check
    and the loader's own guard."""
    if lanes < readers:
        raise TinytitanError(
            f"data.lanes = {lanes} but the run has {readers} data readers (dp ranks x loader workers), "
            f"and every reader needs a lane: set data.lanes >= {readers} (a new data stream) or use fewer "
            "processes or [training.dataloader] num_workers"
        )


def data_config(job_config) -> Data:
    data = getattr(job_config, "data", None)
    if data is None:
        raise TinytitanError(
            "the job config has no [data] section; set [job] custom_config_module = "
            "'tinytitan.job_config' and add [[data.sources]] tables"
        )
    if isinstance(data, dict):
        data = Data(**data)
    return data

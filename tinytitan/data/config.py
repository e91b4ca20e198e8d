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

torchtitan's ConfigManager hands the tables to ``Data`` as plain dicts;
``Data.__post_init__`` turns them into ``Source`` objects (rejecting unknown
keys), which also keeps tyro's CLI overrides working
(``--data.seed 7``, ``--data.sources.0.weight 0.5``).

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
    weight: float = 1.0
    """Share of training *tokens* drawn from this source (normalized over all sources)."""
    exclude: dict[str, list[str]] = field(default_factory=dict)
    """Drop documents whose field (dotted path into the record) has one of these values."""
    validation_files: str = ""
    """Glob inside `path` with held-out files for validation (SlimPajama: 'validation/chunk*/*.jsonl.zst')."""
    validation_docs: int = 0
    """Hold out the first N documents of the first training file for validation (and never train on them)."""

    def validate(self) -> None:
        """The source's own values (its name is checked by ``Data.validate``, which knows the others)."""

        def fail(what: str, fix: str) -> TinytitanError:
            return TinytitanError(f"data source {self.name!r} (path {self.path!r}): {what}; {fix}")

        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not 0 < self.weight < math.inf:
            raise fail(f"weight = {self.weight!r} is not a positive number", "give every source a finite weight > 0")
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


_SOURCE_KEYS = tuple(f.name for f in dataclasses.fields(Source))


def _source_from_dict(index: int, value: Any) -> Source:
    if isinstance(value, Source):
        return value
    if not isinstance(value, dict):
        raise TinytitanError(
            f"[[data.sources]] entry {index} is a {type(value).__name__}; write it as a TOML table "
            "([[data.sources]] with name/path/files/weight keys)"
        )
    unknown = sorted(set(value) - set(_SOURCE_KEYS))
    if unknown:
        label = value.get("name") or f"#{index}"
        raise TinytitanError(
            f"data source {label!r}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(_SOURCE_KEYS)}"
        )
    return Source(**value)


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

    def __post_init__(self):
        self.sources = [_source_from_dict(i, s) for i, s in enumerate(self.sources)]

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

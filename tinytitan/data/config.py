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

``validate_sources`` checks keys, weights, paths and globs; ``tinytitan.data.preflight``
adds the checks that read data before any process starts.
"""

from __future__ import annotations

import dataclasses
import glob
import os
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


# ---------------------------------------------------------------- paths


_HUB_PREFIX = "hf://datasets/"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_repo(path: str) -> str | None:
    """The Hub dataset id when `path` names one rather than a local folder."""
    if path.startswith(_HUB_PREFIX):
        return path[len(_HUB_PREFIX) :].strip("/")
    if os.path.exists(path) or not _HUB_ID.match(path):
        return None
    # 'data/SlimPajama-627B' with a local 'data/' folder is a missing local path, not a Hub id.
    if os.path.isdir(path.split("/", 1)[0]):
        return None
    return path


def _has_suffix(name: str) -> bool:
    return any(name.endswith(s) for s in SUFFIXES)


def list_files(path: str, pattern: str) -> list[str]:
    """Files matched by `pattern` inside `path`, as sorted paths relative to `path`."""
    repo = hub_repo(path)
    if repo is not None:
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        root = f"datasets/{repo}"
        found = fs.glob(f"{root}/{pattern}")
        rels = [f[len(root) + 1 :] for f in found]
    else:
        root = os.path.abspath(path)
        found = glob.glob(os.path.join(root, pattern), recursive=True)
        rels = [os.path.relpath(f, root) for f in found if os.path.isfile(f)]
    return sorted(r.replace(os.sep, "/") for r in rels if _has_suffix(r))


# ---------------------------------------------------------------- validation


def _fail(source: Source, what: str, fix: str) -> TinytitanError:
    return TinytitanError(f"data source {source.name!r} (path {source.path!r}): {what}; {fix}")


def validate_sources(data: Data, *, check_files: bool = True) -> dict[str, list[str]]:
    """Checks the [data] section; returns the training files of every source."""
    if data.format not in FORMATS:
        raise TinytitanError(f"data.format = {data.format!r}; use one of {', '.join(map(repr, FORMATS))}")
    if data.on_error not in ON_ERROR:
        raise TinytitanError(f"data.on_error = {data.on_error!r}; use 'skip' or 'fail'")
    if data.lanes < 1:
        raise TinytitanError(f"data.lanes = {data.lanes}; use a positive number (default 256)")
    if data.encode_batch_bytes < 1:
        raise TinytitanError("data.encode_batch_bytes must be positive (default 1048576)")
    if not data.sources:
        raise TinytitanError(
            "the [data] section has no sources; add [[data.sources]] tables with name, path, files and weight"
        )
    seen: set[str] = set()
    files: dict[str, list[str]] = {}
    for i, s in enumerate(data.sources):
        if not s.name or not re.fullmatch(r"[\w.-]+", s.name):
            raise TinytitanError(
                f"[[data.sources]] entry {i} (path {s.path!r}) needs a name of letters, digits, '_', '-', '.'"
            )
        if s.name in seen:
            raise TinytitanError(f"data source name {s.name!r} is used twice; give every source its own name")
        seen.add(s.name)
        if isinstance(s.weight, bool) or not isinstance(s.weight, (int, float)) or not s.weight > 0:
            raise _fail(s, f"weight = {s.weight!r} is not positive", "give every source a weight > 0")
        if not s.path:
            raise _fail(s, "no path", "set path to a local folder or a Hub dataset id")
        if not s.files:
            raise _fail(s, "no files glob", f"set files to a glob inside path ({SLIMPAJAMA_LAYOUT})")
        if not s.text_field:
            raise _fail(s, "empty text_field", "name the record field with the text ('text', 'content')")
        if not isinstance(s.exclude, dict) or not all(
            isinstance(k, str) and isinstance(v, (list, tuple)) for k, v in s.exclude.items()
        ):
            raise _fail(s, "exclude must map a field to a list of values", "e.g. exclude = { 'meta.lang' = ['x'] }")
        if s.validation_docs < 0:
            raise _fail(s, f"validation_docs = {s.validation_docs}", "use 0 (none) or a positive number")
        if s.validation_files and s.validation_docs:
            raise _fail(s, "both validation_files and validation_docs are set", "choose one held-out split")
        if not check_files:
            continue
        repo = hub_repo(s.path)
        if repo is None and not os.path.isdir(s.path):
            raise _fail(
                s,
                f"folder {os.path.abspath(s.path)} does not exist",
                f"download the data there or fix path ({SLIMPAJAMA_LAYOUT})",
            )
        try:
            matched = list_files(s.path, s.files)
        except Exception as e:  # Hub listing: network or a wrong id
            raise _fail(s, f"cannot list {s.files!r} ({type(e).__name__}: {e})", "check the Hub id / network") from e
        if not matched:
            raise _fail(
                s,
                f"files = {s.files!r} matches no .jsonl/.jsonl.zst/.json.gz/.parquet file",
                f"fix the glob ({SLIMPAJAMA_LAYOUT})",
            )
        if s.validation_files:
            held = list_files(s.path, s.validation_files)
            if not held:
                raise _fail(
                    s,
                    f"validation_files = {s.validation_files!r} matches no file",
                    "fix the glob (SlimPajama: 'validation/chunk*/*.jsonl.zst') or remove it",
                )
            overlap = sorted(set(held) & set(matched))
            if overlap:
                raise _fail(s, f"{overlap[0]} is both a training and a validation file", "make the globs disjoint")
        files[s.name] = matched
    return files

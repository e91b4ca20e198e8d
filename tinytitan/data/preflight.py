"""Start checks of the data that read files: what the launcher checks before any process starts.

``check_data`` runs ``Data.validate`` (the values), lists the files (``tinytitan.data.listing``),
then reads what it must: each source opens and its records hold the text field, prepared shards
match the config, and every data reader gets a lane and a document.

The launcher runs these before any process starts, so a wrong ``text_field`` or a folder of
unreadable files is one line instead of an error inside every rank minutes later. Only the
first readable record of each source is read; a file that cannot be opened is skipped until
one opens, and a source none of whose files opens is refused.
"""

from __future__ import annotations

from typing import Any

from tinytitan.data.config import Data, Source, data_config, require_lanes
from tinytitan.data.files import FileInfo, Opener, ReadError, _loads, file_info, get_field, iter_lines
from tinytitan.data.listing import hub_repo, list_sources
from tinytitan.errors import TinytitanError

MAX_FAILED_FILES = 64  # stop probing a source after this many unreadable files in a row


def first_record(opener: Opener, rel: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The first record of a file (parquet: its column names only) and the top-level field names.

    Raises on a file that cannot be opened or decoded; returns (None, []) for a file with no record.
    """
    info = file_info(opener, rel)
    if info.kind == "parquet":
        import pyarrow.parquet as pq

        with opener.open(rel) as f:
            pf = pq.ParquetFile(f)
            names = list(pf.schema_arrow.names)
            if pf.metadata.num_rows == 0:
                return None, names
            return {name: "" for name in names}, names
    for line in iter_lines(opener, info):
        if not line.strip():
            continue
        record = _loads(line)
        if not isinstance(record, dict):
            raise ValueError(f"the first record is a JSON {type(record).__name__}, not an object")
        return record, list(record)
    return None, []


def _has_field(record: dict[str, Any], dotted: str, columns_only: bool) -> bool:
    if columns_only:  # parquet: nested fields live inside a struct column
        return dotted in record or dotted.split(".")[0] in record
    return get_field(record, dotted) is not None


def probe_source(source: Source, files: list[str]) -> None:
    """Raises one TinytitanError when no file of `source` opens or its records lack `text_field`."""
    if hub_repo(source.path) is not None:
        return  # remote: the readers report it; probing here would download at start
    opener = Opener(source.path, None)
    failures: list[str] = []
    for rel in files:
        try:
            record, names = first_record(opener, rel)
        except Exception as e:  # noqa: BLE001 - any read failure is reported with the file name
            failures.append(f"{rel}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "))
            if len(failures) >= MAX_FAILED_FILES:
                break
            continue
        if record is None:
            continue
        if not _has_field(record, source.text_field, rel.endswith(".parquet")):
            raise TinytitanError(
                f"data source {source.name!r}: records of {opener.full(rel)} have no field {source.text_field!r} "
                f"(fields: {', '.join(names) or 'none'}); set text_field to the one holding the text, "
                "e.g. text_field = 'content' for Starcoderdata"
            )
        return
    if failures:
        tried = f"the first {len(failures)}" if len(failures) < len(files) else f"all {len(files)}"
        raise TinytitanError(
            f"data source {source.name!r}: {tried} of its files cannot be read (first: {failures[0]}); "
            f"check the files under {source.path} (re-download or fix permissions) or the files glob"
        )
    raise TinytitanError(
        f"data source {source.name!r}: its {len(files)} file(s) hold no record; point files at the data "
        "(e.g. files = 'train/chunk*/*.jsonl.zst')"
    )


def probe_sources(data: Data, files: dict[str, list[str]]) -> None:
    """Probes every source; `files` is what ``list_sources`` listed."""
    for source in data.sources:
        probe_source(source, files[source.name])


def data_readers(job_config, world_size: int) -> int:
    """dp ranks x loader workers: how many readers share every source's lanes."""
    p = job_config.parallelism
    model_ranks = max(1, p.tensor_parallel_degree) * max(1, p.pipeline_parallel_degree)
    model_ranks *= max(1, p.context_parallel_degree)
    workers = max(1, job_config.training.dataloader.num_workers)
    return max(1, world_size // model_ranks) * workers


def count_docs(opener: Opener, info: FileInfo, cap: int) -> int:
    """Raw documents (records) of a file, counting no further than ``cap``."""
    if info.row_groups is not None:
        return min(cap, sum(info.row_groups))
    n = 0
    for _ in iter_lines(opener, info):
        n += 1
        if n >= cap:
            break
    return n


def _check_documents(source: Source, rels: list[str], readers: int) -> None:
    """Fewer documents than lanes is fine (some lanes read nothing); fewer than readers is not."""
    if hub_repo(source.path) is not None:
        return  # remote: counting would download at start; the readers report it
    opener = Opener(source.path, None)
    where = f"data source {source.name!r} (path {source.path!r})"
    held = source.validation_docs
    want = held + readers  # documents worth counting
    total = 0
    try:
        for i, rel in enumerate(rels):
            docs = count_docs(opener, file_info(opener, rel), want - total + 1)
            if i == 0 and held and docs <= held:
                raise TinytitanError(
                    f"{where}: validation_docs = {held} holds out every document of its first file {rel}, "
                    f"which has {docs}: "
                    + (f"set validation_docs below {docs} (e.g. {max(1, docs // 10)})" if docs else "remove it")
                    + " or put a bigger file first (files sort by name)"
                )
            total += docs
            if total > want:
                return
    except (OSError, ReadError):
        return  # unreadable files are the loader's to report (data.on_error)
    train = total - held
    if train < readers:
        raise TinytitanError(
            f"{where} has {train} training documents but {readers} data readers (dp ranks x loader workers) "
            f"each need at least one: add documents, or use fewer processes or "
            f"[training.dataloader] num_workers"
        )


def check_against_readers(job_config, data: Data, files: dict[str, list[str]], world_size: int) -> None:
    """Lanes against readers, and every text source's documents against its held-out split and the readers."""
    readers = data_readers(job_config, world_size)
    require_lanes(data.lanes, readers)
    if data.format != "text":
        return
    for source in data.sources:
        _check_documents(source, files[source.name], readers)


def check_data(job_config, world_size: int | None = None) -> dict[str, list[str]]:
    """Fails fast with one clear TinytitanError; the launcher's preflight calls this before starting processes.

    ``world_size`` (all ranks of the run) adds the checks against the number of data readers.
    Returns every text source's files (empty for prepared shards).
    """
    data = data_config(job_config)
    data.validate()
    if data.format == "tokens":
        from tinytitan.data.shards import check_prepared

        files: dict[str, list[str]] = {}
        check_prepared(job_config)
    else:
        files = list_sources(data)  # listed once per launch: the run's record reuses it (launcher.record)
        probe_sources(data, files)
    if world_size is not None:
        check_against_readers(job_config, data, files, world_size)
    return files

"""Checks of the data mixture against the run's shape, made by the launcher before any process starts.

Without them the same mistakes surface minutes later, inside torchrun, as a reader that
"gets no tokens in two passes" on every rank. Counting stops as soon as the answer is
known, so a source of thousands of files costs one or two file reads here.
"""

from __future__ import annotations

from tinytitan.data.config import Data, Source, data_config, hub_repo, list_files
from tinytitan.data.files import FileInfo, Opener, ReadError, file_info, iter_lines
from tinytitan.errors import TinytitanError


def data_readers(job_config, world_size: int) -> int:
    """dp ranks x loader workers: how many readers share every source's lanes."""
    p = job_config.parallelism
    model_ranks = max(1, p.tensor_parallel_degree) * max(1, p.pipeline_parallel_degree)
    model_ranks *= max(1, p.context_parallel_degree)
    dl = getattr(job_config.training, "dataloader", None)
    workers = max(1, int(getattr(dl, "num_workers", 0) or 0))
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


def _check_source(source: Source, readers: int) -> None:
    """Fewer documents than lanes is fine (some lanes read nothing); fewer than readers is not."""
    opener = Opener(source.path, hub_repo(source.path))
    rels = list_files(source.path, source.files)
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


def check_data_start(job_config, world_size: int) -> None:
    """Lanes against readers, and every text source's documents against its held-out split and the readers."""
    data: Data = data_config(job_config)
    readers = data_readers(job_config, world_size)
    if data.lanes < readers:
        raise TinytitanError(
            f"data.lanes = {data.lanes} but the run has {readers} data readers (dp ranks x loader workers), "
            f"and every reader needs a lane: set data.lanes >= {readers} (a new data stream) or use fewer "
            "processes or [training.dataloader] num_workers"
        )
    if data.format != "text":
        return
    for source in data.sources:
        _check_source(source, readers)

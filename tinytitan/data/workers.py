"""Loader worker processes: each runs one Reader and sends finished batches to the loader.

What crosses the process boundary is typed: a worker starts from a ``WorkerSpec`` and sends
``WorkerBatch`` items, or one ``WorkerFailure``, on its queue. Kept free of torch so that a
spawned worker starts in a fraction of a second.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinytitan.data.loader_state import Lanes
from tinytitan.data.mixture import Reader, StagedSampler
from tinytitan.data.plan import MixturePlan
from tinytitan.errors import TinytitanError
from tinytitan.processes import WORKER_PREFIX, die_with_parent, set_process_name


@dataclass(frozen=True)
class WindowSchedule:
    """Which global window indices batch ``b`` (counted since the loader (re)started) covers."""

    windows_base: int  # global windows consumed before the (re)start
    dp_world_size: int
    dp_rank: int
    batch_size: int

    def windows(self, b: int) -> np.ndarray:
        first = self.windows_base + b * self.dp_world_size * self.batch_size + self.dp_rank * self.batch_size
        return np.arange(first, first + self.batch_size, dtype=np.int64)


@dataclass(frozen=True)
class BackendSpec:
    """How a reader gets the tokens of a part: tokenize text while reading, or read prepared shards."""

    format: str  # "text" or "tokens"
    prepared_dir: str = ""  # format "tokens": the folder `tinytitan data prepare` wrote
    encoder: Any = None  # format "text": a tinytitan.data.encode.Encoder (picklable)
    budget: int = 0  # format "text": bytes of text tokenized at once


def make_backend(spec: BackendSpec):
    if spec.format == "tokens":
        from tinytitan.data.shard_reader import TokensBackend

        return TokensBackend(spec.prepared_dir)
    from tinytitan.data.text_backend import TextBackend

    return TextBackend(spec.encoder, spec.budget)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one worker process needs: its reader, where its lanes stand, and which batches are its."""

    plan: MixturePlan
    backend: BackendSpec
    seq_len: int
    reader_id: int
    n_readers: int
    lanes: Lanes  # the lanes' saved state to start from ({} at the start of a stream)
    schedule: WindowSchedule
    first_batch: int  # the first batch (counted since the loader (re)started) this worker makes
    batch_step: int  # batches between two of this worker's (the rank's number of workers)
    sampler: StagedSampler
    parent_pid: int  # the rank; the worker stops when it is gone


@dataclass(frozen=True)
class WorkerBatch:
    """One finished batch, with the reader's lanes as of that batch (what a checkpoint saves)."""

    batch: int
    windows: np.ndarray  # [batch_size, seq_len + 1] token ids
    lanes: Lanes
    unreadable: tuple[str, ...]  # files this reader found unreadable since its previous batch


@dataclass(frozen=True)
class WorkerFailure:
    """The worker stopped on an error; the loader raises it in the rank."""

    error: str  # the exception's class name
    message: str

    def exception(self) -> Exception:
        if self.error == "TinytitanError":
            return TinytitanError(self.message)
        return RuntimeError(f"data loader worker failed: {self.error}: {self.message}")


def worker_main(spec: WorkerSpec, out: queue.Queue) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    die_with_parent(signal.SIGKILL)  # a killed rank leaves no worker behind
    set_process_name(WORKER_PREFIX + mp.current_process().name.removeprefix("tinytitan-data-"))
    if os.getppid() != spec.parent_pid:
        return  # the rank died before the request above: it cannot reach this worker any more
    try:
        reader = Reader(spec.plan, make_backend(spec.backend), spec.seq_len, spec.reader_id, spec.n_readers)
        reader.load(spec.lanes)
        b = spec.first_batch
        sent_errors = 0
        while True:
            arr = reader.batch(spec.sampler.sources(spec.schedule.windows(b)))
            item = WorkerBatch(b, arr, reader.state(), tuple(reader.errors[sent_errors:]))
            sent_errors = len(reader.errors)
            while True:
                try:
                    out.put(item, timeout=5.0)
                    break
                except queue.Full:
                    if os.getppid() != spec.parent_pid:
                        return
            b += spec.batch_step
    except TinytitanError as e:
        out.put(WorkerFailure("TinytitanError", str(e)))
    except KeyboardInterrupt:
        return
    except BaseException as e:  # noqa: BLE001 - forwarded to the loader
        out.put(WorkerFailure(type(e).__name__, f"{e}\n{traceback.format_exc()}"))

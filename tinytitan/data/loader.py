"""The training data loader: the configured mixture, packed into ``seq_len + 1`` windows.

``build_dataloader`` is the TrainSpec's ``build_dataloader_fn``. The loader yields
``({"input": LongTensor[B, S]}, labels LongTensor[B, S])`` forever.

Checkpoints: ``state_dict()`` gathers the state of every dp rank (a collective over the
default process group when one is initialized, like DCP's own save) and returns one
JSON document under one key, identical on every rank, so DCP stores it once.
``load_state_dict`` takes the lanes the new layout gives this rank: a checkpoint written
by any number of ranks and workers loads on any other (lane ``l`` -> reader
``l % (dp ranks x workers)``). The document itself, the merge of the ranks' parts and the
checks before a resume are in ``tinytitan.data.loader_state``; this module produces batches.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import queue
import time
import weakref
from typing import Any

import numpy as np
import torch
from torchtitan.components.dataloader import BaseDataLoader

from tinytitan.data.config import Data, data_config, require_lanes
from tinytitan.data.encode import Encoder
from tinytitan.data.loader_state import (
    Lanes,
    LaneState,
    Layout,
    LoaderState,
    RankState,
    check_fingerprint,
    dump_state,
    load_state,
    merge_states,
    note_seq_len_change,
    warn_on_weight_change,
)
from tinytitan.data.mixture import Reader, Sampler, lane_stats
from tinytitan.data.plan import MixturePlan
from tinytitan.data.planner import make_plan
from tinytitan.data.workers import WindowSchedule, make_backend, worker_main
from tinytitan.errors import TinytitanError

logger = logging.getLogger("tinytitan.data")


class MixtureDataLoader(BaseDataLoader):
    """A BaseDataLoader over a MixturePlan for one dp rank."""

    def __init__(
        self,
        plan: MixturePlan,
        backend_spec: dict,
        *,
        dp_rank: int,
        dp_world_size: int,
        batch_size: int,
        seq_len: int,
        num_workers: int = 0,
        prefetch_factor: int | None = None,
        pin_memory: bool = False,
    ):
        if not 0 <= dp_rank < dp_world_size:
            raise ValueError(f"dp_rank {dp_rank} outside dp_world_size {dp_world_size}")
        self.plan = plan
        self.backend_spec = backend_spec
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.num_workers = max(0, int(num_workers))
        self.n_local = max(1, self.num_workers)
        self.n_readers = dp_world_size * self.n_local
        self.prefetch = max(1, int(prefetch_factor or 2))
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.weights = [s.weight for s in plan.sources]
        self.sampler = Sampler(plan.seed, self.weights)
        self.windows_base = 0  # global windows consumed before this (re)start
        self.batches_base = 0  # batches this rank consumed before this (re)start
        self.b = 0  # batches consumed since this (re)start
        # lanes state of each local reader as of the last consumed batch
        self._reader_states: list[Lanes | None] = [None] * self.n_local
        self._readers: list[Reader] | None = None  # in-process readers (num_workers == 0)
        self._procs: list = []
        self._queues: list = []
        self._errors: list[str] = []
        self._loaded_lanes: Lanes | None = None
        self.trace: list[tuple[int, int]] | None = None  # (source, lane) per window, in-process readers only
        self.process_group = None  # gathered over in state_dict(); None: the default group
        require_lanes(plan.lanes, self.n_readers)
        _LIVE.add(self)

    # ---------------------------------------------------------- iteration
    def reader_id(self, local: int) -> int:
        return self.dp_rank * self.n_local + local

    def _local_for(self, b: int) -> int:
        return (self.batches_base + b) % self.n_local

    def _schedule(self) -> WindowSchedule:
        return WindowSchedule(self.windows_base, self.dp_world_size, self.dp_rank, self.batch_size)

    def _initial_lanes(self) -> Lanes:
        return self._loaded_lanes or {}

    def _make_readers(self) -> list[Reader]:
        backend = make_backend(self.backend_spec)
        readers = []
        for k in range(self.n_local):
            r = Reader(self.plan, backend, self.seq_len, self.reader_id(k), self.n_readers)
            r.load(self._initial_lanes())
            r.trace = self.trace
            readers.append(r)
        return readers

    def _start_workers(self) -> None:
        ctx = mp.get_context("spawn")
        lanes = self._initial_lanes()
        for k in range(self.n_local):
            first_b = (k - self.batches_base) % self.n_local
            q = ctx.Queue(maxsize=self.prefetch)
            p = ctx.Process(
                target=worker_main,
                args=(
                    self.plan,
                    self.backend_spec,
                    self.seq_len,
                    self.reader_id(k),
                    self.n_readers,
                    lanes,
                    self._schedule(),
                    first_b,
                    self.n_local,
                    self.weights,
                    q,
                    os.getpid(),
                ),
                daemon=True,
                name=f"tinytitan-data-{self.dp_rank}-{k}",
            )
            p.start()
            self._procs.append(p)
            self._queues.append(q)

    def _stop_workers(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(timeout=5)
        for q in self._queues:
            q.cancel_join_thread()
            q.close()
        self._procs, self._queues = [], []

    def _next_array(self) -> np.ndarray:
        k = self._local_for(self.b)
        if self.num_workers == 0:
            if self._readers is None:
                self._readers = self._make_readers()
            reader = self._readers[k]
            n_err = len(reader.errors)
            arr = reader.batch(self.sampler.sources(self._schedule().windows(self.b)))
            self._errors.extend(reader.errors[n_err:])
            self._reader_states[k] = None  # read live from the reader
            return arr
        if not self._procs:
            self._start_workers()
        q, p = self._queues[k], self._procs[k]
        while True:
            try:
                item = q.get(timeout=1.0)
                break
            except queue.Empty:
                if not p.is_alive():
                    raise RuntimeError(f"data loader worker {p.name} died (exit code {p.exitcode})") from None
        if item[0] == "error":
            self._stop_workers()
            if item[1] == "TinytitanError":
                raise TinytitanError(item[2])
            raise RuntimeError(f"data loader worker failed: {item[1]}: {item[2]}")
        _, b, arr, state, errors = item
        if b != self.b:
            raise AssertionError(f"worker {k} sent batch {b}, expected {self.b}")
        self._reader_states[k] = state
        self._errors.extend(errors)
        return arr

    def next_batch(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        arr = self._next_array()
        self.b += 1
        t = torch.from_numpy(arr)
        inputs, labels = t[:, :-1].contiguous(), t[:, 1:].contiguous()
        if self.pin_memory:
            inputs, labels = inputs.pin_memory(), labels.pin_memory()
        return {"input": inputs}, labels

    def __iter__(self):
        while True:
            yield self.next_batch()

    # ---------------------------------------------------------- state
    def _local_lanes(self) -> Lanes:
        """Lanes of this rank's readers as of the last consumed batch."""
        merged: Lanes = {s.name: {} for s in self.plan.sources}
        initial = self._initial_lanes()
        for k in range(self.n_local):
            if self._readers is not None:
                st = self._readers[k].state()
            elif self._reader_states[k] is not None:
                st = self._reader_states[k]
            else:  # nothing consumed from this reader yet: its lanes as loaded
                rid = self.reader_id(k)
                st = {
                    s.name: {
                        lid: initial.get(s.name, {}).get(lid) or LaneState()
                        for lid in range(rid, self.plan.lanes, self.n_readers)
                    }
                    for s in self.plan.sources
                }
            for name, lanes in st.items():
                merged[name].update(lanes)
        return merged

    def _local_state(self) -> RankState:
        return RankState(
            rank=self.dp_rank,
            windows=self.windows_base + self.b * self.dp_world_size * self.batch_size,
            batches=self.batches_base + self.b,
            lanes=self._local_lanes(),
            unreadable=sorted(set(self._errors)),
        )

    def _global_state(self) -> LoaderState:
        local = self._local_state()
        parts = [local]
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            n = dist.get_world_size(self.process_group)
            if n > 1:
                parts = [None] * n
                dist.all_gather_object(parts, local, group=self.process_group)
        return self._merge(parts)

    def _merge(self, parts: list[RankState]) -> LoaderState:
        layout = Layout(self.dp_world_size, self.n_local, self.batch_size, self.seq_len)
        return merge_states(self.plan, layout, parts)

    def local_state_dict(self) -> RankState:
        """This rank's part of the state (no communication); see merge_rank_states."""
        return self._local_state()

    def state_dict(self) -> dict[str, Any]:
        """Collective when torch.distributed is initialized: call it on every rank (DCP does)."""
        return dump_state(self._global_state())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        st = load_state(state_dict)
        check_fingerprint(st.fingerprint, self.plan.fingerprint())
        if self.dp_rank == 0:
            warn_on_weight_change(st.weights, self.plan)
            note_seq_len_change(st.layout, self.seq_len)
        old = st.layout
        self.windows_base = st.windows
        self.batches_base = st.batches
        self.b = 0
        self._loaded_lanes = st.lanes
        self._errors = list(st.unreadable)
        self._reader_states = [None] * self.n_local
        self._stop_workers()
        if self._readers is not None:
            for r in self._readers:
                r.close()
            self._readers = None
        if (old.dp_world_size, old.workers) != (self.dp_world_size, self.n_local):
            logger.info(
                "data: resuming a stream written by %d dp ranks x %d loader readers on %d x %d: "
                "lanes re-dealt (lane l -> reader l mod %d); every lane continues where it stopped",
                old.dp_world_size,
                old.workers,
                self.dp_world_size,
                self.n_local,
                self.n_readers,
            )

    # ---------------------------------------------------------- observability
    def stats(self) -> dict[str, float]:
        """Cumulative counters of this rank; sum over ranks for the run's totals.

        tokens/<src>, docs/<src>, docs_skipped/<src> (empty documents), docs_excluded/<src>,
        passes/<src> (completed passes; the sum over ranks is the run's count),
        files_skipped (unreadable files met).
        """
        return lane_stats(self.plan, self._local_lanes())

    def skipped_files(self) -> list[str]:
        return sorted(set(self._errors))

    def close(self) -> None:
        """Stops the worker processes and closes the readers' files (TinyTrainer.close calls it); idempotent."""
        self._stop_workers()
        if self._readers is not None:
            for r in self._readers:
                r.close()
            self._readers = None

    def __del__(self):  # a loader dropped without close(): its workers must not outlive it
        if getattr(self, "_procs", None):
            self._stop_workers()


def merge_rank_states(loaders_or_states: list) -> dict[str, Any]:
    """The checkpoint state of several single-process loaders that play the dp ranks of one run.

    Takes the loaders (or their ``local_state_dict()``); returns what ``state_dict()`` returns
    in a real distributed run.
    """
    first = loaders_or_states[0]
    if not isinstance(first, MixtureDataLoader):
        raise TypeError("pass the loaders; their plan is needed to merge")
    parts = [x.local_state_dict() for x in loaders_or_states]
    return dump_state(first._merge(parts))


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _report_at_exit() -> None:
    for loader in list(_LIVE):
        try:
            files = loader.skipped_files()
            if files:
                logger.warning(
                    "data: %d unreadable file(s) were skipped on dp rank %d: %s",
                    len(files),
                    loader.dp_rank,
                    "; ".join(files),
                )
            loader.close()
        except Exception as e:  # at exit: report, and go on closing the others
            logger.warning("data: closing the loader of dp rank %d at exit failed: %r", loader.dp_rank, e)


# ---------------------------------------------------------- builders


def backend_spec(data: Data, tokenizer) -> dict:
    if data.format == "tokens":
        return {"format": "tokens", "prepared_dir": data.prepared_dir}
    if tokenizer is None:
        raise TinytitanError("data.format = 'text' needs a tokenizer; set model.hf_assets_path to a tokenizer folder")
    return {"format": "text", "encoder": Encoder(tokenizer), "budget": data.encode_batch_bytes}


def build_dataloader(*, dp_world_size: int, dp_rank: int, tokenizer, job_config, **kwargs) -> MixtureDataLoader:
    """TrainSpec.build_dataloader_fn: the [data] mixture for this dp rank."""
    data = data_config(job_config)
    training = job_config.training
    dl = training.dataloader
    plan = make_plan(data, tokenizer)
    started = time.perf_counter()
    loader = MixtureDataLoader(
        plan,
        backend_spec(data, tokenizer),
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        batch_size=training.local_batch_size,
        seq_len=training.seq_len,
        num_workers=dl.num_workers,
        prefetch_factor=dl.prefetch_factor,
        pin_memory=dl.pin_memory,
    )
    logger.info(
        "data: %s format, %s, %d lanes per source, %d readers, planned in %.2fs",
        data.format,
        ", ".join(f"{s.name} {s.weight:.3f} ({len(s.files)} files, {len(s.parts)} parts)" for s in plan.sources),
        plan.lanes,
        loader.n_readers,
        time.perf_counter() - started,
    )
    return loader

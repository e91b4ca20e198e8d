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

Stages (``[[data.stages]]``, spans from ``tinytitan.data.stages``) become window indices here:
stage ``k`` starts at global window ``(first_step - 1) x global batch``. The sampler switches
mixtures at that window on every rank and worker, with no restart and no state of its own.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
from typing import Any

import numpy as np
import torch
from torchtitan.components.dataloader import BaseDataLoader

from tinytitan.data.config import require_lanes
from tinytitan.data.loader_state import (
    Lanes,
    LaneState,
    Layout,
    LoaderState,
    RankState,
    StageRecord,
    check_fingerprint,
    check_stage_change,
    dump_state,
    load_state,
    merge_states,
    note_seq_len_change,
)
from tinytitan.data.mixture import Reader, StagedSampler, lane_stats
from tinytitan.data.plan import MixturePlan
from tinytitan.data.stage_tokens import StageTokens, stage_records
from tinytitan.data.stages import StageSpan
from tinytitan.data.workers import (
    BackendSpec,
    WindowSchedule,
    WorkerBatch,
    WorkerFailure,
    WorkerSpec,
    make_backend,
    worker_main,
)
from tinytitan.processes import RankFailure, describe_exit, process_state

logger = logging.getLogger("tinytitan.data")


class MixtureDataLoader(BaseDataLoader):
    """A BaseDataLoader over a MixturePlan for one dp rank.

    ``stages``: the run's stages (``tinytitan.data.stages.stage_spans``) and ``windows_per_step`` the
    global batch in windows; without them the plan's weights are one mixture for the whole stream.
    """

    def __init__(
        self,
        plan: MixturePlan,
        backend: BackendSpec,
        *,
        dp_rank: int,
        dp_world_size: int,
        batch_size: int,
        seq_len: int,
        num_workers: int = 0,
        prefetch_factor: int | None = None,
        pin_memory: bool = False,
        stages: list[StageSpan] | None = None,
        windows_per_step: int | None = None,
        allow_stage_change: bool = False,
    ):
        if not 0 <= dp_rank < dp_world_size:
            raise ValueError(f"dp_rank {dp_rank} outside dp_world_size {dp_world_size}")
        self.plan = plan
        self.backend = backend
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.num_workers = max(0, int(num_workers))
        self.n_local = max(1, self.num_workers)
        self.n_readers = dp_world_size * self.n_local
        self.prefetch = max(1, int(prefetch_factor or 2))
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.windows_per_step = windows_per_step or batch_size * dp_world_size
        if not stages:
            stages = [StageSpan(0, "", 1, 1, {s.name: s.weight for s in plan.sources}, "")]
        self.staged = bool(stages[0].name)  # [[data.stages]] configured (not the one unnamed mixture)
        self.stages = stage_records(stages, self.windows_per_step)
        self.allow_stage_change = allow_stage_change
        self.sampler = StagedSampler(
            plan.seed,
            [st.first_window for st in self.stages],
            [[st.weights[s.name] for s in plan.sources] for st in self.stages],
        )
        self.stage_tokens = self._stage_tokens(0, {})
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
        self.loaded_layout: Layout | None = None  # the layout of the state loaded, if any
        self.process_group = None  # gathered over in state_dict(); None: the default group
        require_lanes(plan.lanes, self.n_readers)

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
        backend = make_backend(self.backend)
        readers = []
        for k in range(self.n_local):
            r = Reader(self.plan, backend, self.seq_len, self.reader_id(k), self.n_readers)
            r.load(self._initial_lanes())
            readers.append(r)
        return readers

    def _start_workers(self) -> None:
        ctx = mp.get_context("spawn")
        lanes = self._initial_lanes()
        for k in range(self.n_local):
            spec = WorkerSpec(
                plan=self.plan,
                backend=self.backend,
                seq_len=self.seq_len,
                reader_id=self.reader_id(k),
                n_readers=self.n_readers,
                lanes=lanes,
                schedule=self._schedule(),
                first_batch=(k - self.batches_base) % self.n_local,
                batch_step=self.n_local,
                sampler=self.sampler,
                parent_pid=os.getpid(),
            )
            q = ctx.Queue(maxsize=self.prefetch)
            p = ctx.Process(
                target=worker_main,
                args=(spec, q),
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
        said_stopped = False
        while True:
            try:
                item = q.get(timeout=1.0)
                break
            except queue.Empty:
                if not p.is_alive():
                    raise RankFailure(f"data loader worker {p.name} died ({describe_exit(p.exitcode)})") from None
                if not said_stopped and process_state(p.pid) == "T":  # the launcher's hang line names this rank
                    said_stopped = True
                    logger.warning(f"data loader worker {p.name} (pid {p.pid}) is stopped (SIGSTOP?): waiting for it")
        if isinstance(item, WorkerFailure):
            self._stop_workers()
            raise item.exception()
        if not isinstance(item, WorkerBatch) or item.batch != self.b:
            raise AssertionError(f"worker {k} sent {type(item).__name__} {getattr(item, 'batch', '')}, "
                                 f"expected batch {self.b}")  # fmt: skip
        self._reader_states[k] = item.lanes
        self._errors.extend(item.unreadable)
        return item.windows

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

    def windows(self) -> int:
        """Global windows (over all dp ranks) consumed as of this rank's last batch."""
        return self.windows_base + self.b * self.dp_world_size * self.batch_size

    def _local_state(self) -> RankState:
        return RankState(
            rank=self.dp_rank,
            windows=self.windows(),
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
        stages = self.stages if self.staged else []
        tokens = self.stage_token_counts() if self.staged else {}
        return merge_states(self.plan, layout, parts, stages, tokens)

    def state_dict(self) -> dict[str, Any]:
        """Collective when torch.distributed is initialized: call it on every rank (DCP does)."""
        return dump_state(self._global_state())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        st = load_state(state_dict)
        check_fingerprint(st.fingerprint, self.plan.fingerprint())
        step = st.windows // self.windows_per_step
        for line in check_stage_change(st, self.stages, step, self.allow_stage_change):
            if self.dp_rank == 0:
                logger.warning(line)
        if self.dp_rank == 0:
            note_seq_len_change(st.layout, self.seq_len)
        old = self.loaded_layout = st.layout  # the trainer rescales its token count to a new dp layout
        self.stage_tokens = self._stage_tokens(st.windows, st.stage_tokens)
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

    # ---------------------------------------------------------- stages
    def _stage_tokens(self, since: int, saved: dict[str, dict[str, int]]) -> StageTokens:
        base = np.zeros((len(self.stages), len(self.plan.sources)), np.int64)
        for i, stage in enumerate(self.stages):
            for j, src in enumerate(self.plan.sources):
                base[i, j] = saved.get(stage.name, {}).get(src.name, 0)
        return StageTokens(self.sampler, len(self.plan.sources), self.seq_len, since, base)

    def stage_token_counts(self) -> dict[str, dict[str, int]]:
        """Tokens per source of every stage begun so far, over all ranks (the same on every rank)."""
        counts = self.stage_tokens.at(self.windows())
        return {
            st.name: {s.name: int(counts[i, j]) for j, s in enumerate(self.plan.sources)}
            for i, st in enumerate(self.stages)
            if st.first_window < self.windows()
        }

    def current_stage(self) -> StageRecord | None:
        """The stage of the last window consumed (the first stage before any); None without [[data.stages]]."""
        if not self.staged:
            return None
        last = max(0, self.windows() - 1)
        return self.stages[int(self.sampler.stages(np.array([last]))[0])]

    def stage_stats(self) -> dict[str, float]:
        """The run's stage metrics, the same on every rank (not to be summed): ``stage`` (its index),
        ``stage/<name>/first_step`` and ``stage/<name>/tokens/<source>`` for every stage begun."""
        stage = self.current_stage()
        if stage is None:
            return {}
        out = {"stage": float(self.stages.index(stage)), f"stage/{stage.name}/first_step": float(stage.first_step)}
        for name, per_source in self.stage_token_counts().items():
            out.update({f"stage/{name}/tokens/{src}": float(n) for src, n in per_source.items()})
        return out

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

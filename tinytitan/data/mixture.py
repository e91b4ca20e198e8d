"""The deterministic core: lanes that pack documents into windows, readers that mix sources.

Vocabulary (see docs/data.md):

* a **lane** is one of ``lanes`` fixed slices of every pass over a source. It reads its
  parts in order, encodes every kept document as ``BOS ... EOS``, concatenates them and
  cuts ``seq_len + 1`` windows. Tokens a window did not take stay in the lane.
* a **reader** (one per dp rank and loader worker) owns lanes ``l`` with
  ``l % n_readers == reader_id`` of every source. For a window of source ``s`` it uses the
  lane with the lowest (pass, lane id) among its lanes: it drains one lane's share of a
  pass before it starts the next lane, and finishes every lane's pass ``p`` before any
  lane starts pass ``p + 1``.
* the **sampler** picks the source of global window ``g`` (counted over all ranks) from a
  golden-ratio (Weyl) sequence: the realized share of every source stays within a few
  windows of its weight at any point, with no state but ``g``. With stages
  (``[[data.stages]]``) the stage of ``g`` follows from ``g`` too, and each stage has its own
  sequence over its own weights, counted from the stage's first window: the shares are exact
  within every stage, and a source with weight 0 in a stage is never picked there.

The state of a lane (``LaneState`` in ``tinytitan.data.loader_state``) is a handful of
integers: where the first unused token sits (pass, part, document, token offset), how far
reading got (for counters), and counters. Resuming re-reads and re-tokenizes from that document.
"""

from __future__ import annotations

import heapq
import logging

import numpy as np

from tinytitan.data.config import require_lanes
from tinytitan.data.loader_state import Lanes, LaneState
from tinytitan.data.plan import MixturePlan, SourcePlan, lane_parts, source_seed
from tinytitan.errors import TinytitanError

logger = logging.getLogger("tinytitan.data")

_INF = 1 << 62
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, odd


# ---------------------------------------------------------------- sampler


class Sampler:
    """Source of every window index: a low-discrepancy sequence over the weights (sources with weight 0
    are left out of the sequence, so they are never picked)."""

    def __init__(self, seed: int, weights: list[float]):
        self.offset = np.uint64(source_seed(seed, "<mixture>") * 0x2545F4914F6CDD1D & (2**64 - 1))
        w = np.asarray(weights, np.float64)
        self.picked = np.flatnonzero(w > 0)  # index into the sources of each weighted source
        cum = np.cumsum(w[self.picked])
        cum = cum / cum[-1]
        self.thresholds = np.array([min(int(c * 2.0**64), 2**64 - 1) for c in cum[:-1]], np.uint64)

    def sources(self, g: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            x = self.offset + g.astype(np.uint64) * np.uint64(_GOLDEN)
        return self.picked[np.searchsorted(self.thresholds, x, side="right")]


class StagedSampler:
    """The source of every global window of a run whose mixture changes at given windows (the stages).

    Stage ``k`` covers the windows from ``starts[k]`` to the next start (the last stage: on, forever);
    window ``g`` of stage ``k`` is window ``g - starts[k]`` of that stage's own ``Sampler``. One stage
    starting at 0 is exactly the single-mixture ``Sampler`` of a run without stages.
    """

    def __init__(self, seed: int, starts: list[int], weights: list[list[float]]):
        if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError(f"stage starts must begin at 0 and increase: {starts}")
        self.starts = np.asarray(starts, np.int64)
        self.samplers = [Sampler(seed, w) for w in weights]

    def stages(self, g: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, g, side="right") - 1

    def sources(self, g: np.ndarray) -> np.ndarray:
        g = np.asarray(g, np.int64)
        if g.size == 0:
            return np.empty(0, np.int64)
        stage = self.stages(g)
        if stage.min() == stage.max():
            k = int(stage[0])
            return self.samplers[k].sources(g - self.starts[k])
        out = np.empty(g.shape, np.int64)
        for k in np.unique(stage).tolist():
            sel = stage == k
            out[sel] = self.samplers[k].sources(g[sel] - self.starts[k])
        return out


# ---------------------------------------------------------------- lanes


class Lane:
    """One lane of one source while it is read; ``state()``/``load()`` convert to its saved LaneState."""

    __slots__ = (
        "src",
        "lid",
        "seed",
        "n_lanes",
        "serving",
        "fetch_pass",
        "fetch_part",
        "fetch_doc",
        "counted_to",
        "chunks",
        "head",
        "buffered",
        "skip_tokens",
        "stream",
        "tokens",
        "docs",
        "empty",
        "excluded",
        "unreadable",
        "_parts",
    )

    def __init__(self, src: SourcePlan, lid: int, seed: int, n_lanes: int):
        self.src, self.lid, self.seed, self.n_lanes = src, lid, seed, n_lanes
        self.serving = 0  # the pass this lane serves
        self.fetch_pass = self.fetch_part = self.fetch_doc = 0  # the next document to read
        self.counted_to = (0, 0, 0)  # (pass, part, doc): documents before it are counted
        self.chunks: list[tuple] = []  # (tokens, doc starts, doc indices, pass, part) read, not yet taken
        self.head = 0  # tokens of chunks[0] already taken
        self.buffered = 0  # tokens in chunks not yet taken
        self.skip_tokens = 0  # tokens of the first document read to drop (a resume inside a document)
        self.stream = None
        self.tokens = self.docs = self.empty = self.excluded = self.unreadable = 0
        self._parts: tuple[int, np.ndarray] | None = None

    def parts(self, pass_: int) -> np.ndarray:
        if self._parts is None or self._parts[0] != pass_:
            self._parts = (pass_, lane_parts(self.seed, self.src, self.n_lanes, self.lid, pass_))
        return self._parts[1]

    # -- reading
    def fetch_once(self, backend, on_error: str, errors: list[str]) -> None:
        parts = self.parts(self.fetch_pass)
        if self.fetch_part >= len(parts):  # no part in this pass
            self.fetch_pass, self.fetch_part, self.fetch_doc = self.fetch_pass + 1, 0, 0
            return
        if self.stream is None:
            pos = (self.fetch_pass, self.fetch_part)
            count_from = (
                _INF if pos < self.counted_to[:2] else (self.counted_to[2] if pos == self.counted_to[:2] else 0)
            )
            self.stream = backend.open(self.src, int(parts[self.fetch_part]), self.fetch_doc, count_from)
        f = self.stream.fetch()
        if f.tokens.size:
            head = 0
            if self.skip_tokens:
                head, self.skip_tokens = self.skip_tokens, 0
                if self.chunks:
                    raise AssertionError("resume offset with tokens already buffered")
                self.head = head
            self.chunks.append((f.tokens, f.starts, f.ts, self.fetch_pass, self.fetch_part))
            self.buffered += int(f.tokens.size) - head
        self.docs += f.docs
        self.empty += f.empty
        self.excluded += f.excluded
        if f.error is not None:
            self.skip_tokens = 0  # the resume point is gone with the file
            part = self.src.parts[int(parts[self.fetch_part])]
            fresh = (self.fetch_pass, self.fetch_part, f.error_t) >= self.counted_to
            if on_error == "fail":
                raise TinytitanError(
                    f"data source {self.src.name!r}: cannot read {f.error}; fix or remove the file, "
                    "or set data.on_error = 'skip'"
                )
            if fresh and part.index == 0:
                self.unreadable += 1
                errors.append(f.error)
                logger.warning("data source %r: skipping unreadable file %s", self.src.name, f.error)
        self.fetch_doc = f.next_t
        if f.done:
            self.stream.close()
            self.stream = None
            self.fetch_part, self.fetch_doc = self.fetch_part + 1, 0
            if self.fetch_part >= len(parts):
                self.fetch_pass, self.fetch_part = self.fetch_pass + 1, 0
        pos = (self.fetch_pass, self.fetch_part, self.fetch_doc)
        if pos > self.counted_to:
            self.counted_to = pos

    def take(self, out: np.ndarray, need: int) -> None:
        pos = 0
        chunks = self.chunks
        while pos < need:
            tokens = chunks[0][0]
            n = min(tokens.size - self.head, need - pos)
            out[pos : pos + n] = tokens[self.head : self.head + n]
            pos += n
            self.head += n
            if self.head == tokens.size:
                chunks.pop(0)
                self.head = 0
        self.buffered -= need

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    # -- state
    def cursor(self) -> tuple[int, int, int, int]:
        if self.chunks:
            _, starts, ts, p, k = self.chunks[0]
            i = int(np.searchsorted(starts, self.head, side="right")) - 1
            return p, k, int(ts[i]), self.head - int(starts[i])
        return self.fetch_pass, self.fetch_part, self.fetch_doc, self.skip_tokens

    def state(self) -> LaneState:
        next_pass, next_part, next_doc, next_token = self.cursor()
        counted_pass, counted_part, counted_doc = self.counted_to
        return LaneState(
            self.serving,
            next_pass,
            next_part,
            next_doc,
            next_token,
            counted_pass,
            counted_part,
            counted_doc,
            self.tokens,
            self.docs,
            self.empty,
            self.excluded,
            self.unreadable,
        )

    def load(self, st: LaneState) -> None:
        self.close()
        self.serving = st.serving_pass
        self.fetch_pass, self.fetch_part, self.fetch_doc = st.next_pass, st.next_part, st.next_doc
        self.skip_tokens = st.next_token
        self.counted_to = (st.counted_pass, st.counted_part, st.counted_doc)
        self.tokens, self.docs, self.empty = st.tokens, st.docs, st.empty_docs
        self.excluded, self.unreadable = st.excluded_docs, st.unreadable_files
        self.chunks, self.head, self.buffered = [], 0, 0


# ---------------------------------------------------------------- readers


class Reader:
    """Produces windows for one (dp rank, loader worker)."""

    def __init__(self, plan: MixturePlan, backend, seq_len: int, reader_id: int, n_readers: int):
        require_lanes(plan.lanes, n_readers)
        self.plan = plan
        self.backend = backend
        self.seq_len = seq_len
        self.need = seq_len + 1
        self.reader_id = reader_id
        self.n_readers = n_readers
        self.lanes: list[dict[int, Lane]] = [
            {lid: Lane(src, lid, plan.seed, plan.lanes) for lid in range(reader_id, plan.lanes, n_readers)}
            for src in plan.sources
        ]
        self.errors: list[str] = []  # unreadable files met by this reader
        self._rebuild_heaps()

    def _rebuild_heaps(self) -> None:
        self.heaps = [[(lane.serving, lid) for lid, lane in lanes.items()] for lanes in self.lanes]
        for h in self.heaps:
            heapq.heapify(h)
        self.logged_pass = [h[0][0] for h in self.heaps]

    def window(self, s: int, out: np.ndarray) -> None:
        lanes, heap, need = self.lanes[s], self.heaps[s], self.need
        idle = 0
        while True:
            lane = lanes[heap[0][1]]
            if lane.buffered >= need:
                lane.take(out, need)
                lane.tokens += self.seq_len
                return
            if lane.fetch_pass <= lane.serving:
                before = lane.buffered
                lane.fetch_once(self.backend, self.plan.on_error, self.errors)
                if lane.buffered > before:
                    idle = 0
                continue
            # this lane has served its share of the pass: the next lane in (pass, id) order
            lane.serving = lane.fetch_pass
            heapq.heapreplace(heap, (lane.serving, lane.lid))
            idle += 1
            if idle > 2 * len(lanes) + 2:
                src = self.plan.sources[s]
                raise TinytitanError(
                    f"data source {src.name!r} (path {src.path!r}) gives reader {self.reader_id} no tokens in "
                    f"two passes over its {len(lanes)} lanes: every document is empty, excluded or unreadable "
                    "(check text_field, exclude and files), or the source has fewer documents than data.lanes"
                )
            if heap[0][0] > self.logged_pass[s]:
                self.logged_pass[s] = heap[0][0]
                logger.info(
                    "data source %r: reader %d finished pass %d, starting pass %d (reshuffled)",
                    self.plan.sources[s].name,
                    self.reader_id,
                    heap[0][0] - 1,
                    heap[0][0],
                )

    def batch(self, sources: np.ndarray) -> np.ndarray:
        out = np.empty((len(sources), self.need), np.int64)
        for i, s in enumerate(sources.tolist()):
            self.window(s, out[i])
        return out

    # -- state
    def state(self) -> Lanes:
        return {
            src.name: {lid: lane.state() for lid, lane in lanes.items()}
            for src, lanes in zip(self.plan.sources, self.lanes, strict=True)
        }

    def load(self, lanes_state: Lanes) -> None:
        for src, lanes in zip(self.plan.sources, self.lanes, strict=True):
            saved = lanes_state.get(src.name, {})
            for lid, lane in lanes.items():
                lane.load(saved.get(lid) or LaneState())
        self._rebuild_heaps()

    def close(self) -> None:
        for lanes in self.lanes:
            for lane in lanes.values():
                lane.close()


def lane_stats(plan: MixturePlan, lanes_state: Lanes) -> dict[str, float]:
    """Counters summed over the given lanes (see loader.stats)."""
    out: dict[str, float] = {}
    files = 0
    for src in plan.sources:
        lanes = list(lanes_state.get(src.name, {}).values())
        out[f"tokens/{src.name}"] = float(sum(st.tokens for st in lanes))
        out[f"docs/{src.name}"] = float(sum(st.docs for st in lanes))
        out[f"docs_skipped/{src.name}"] = float(sum(st.empty_docs for st in lanes))
        out[f"docs_excluded/{src.name}"] = float(sum(st.excluded_docs for st in lanes))
        out[f"passes/{src.name}"] = float(sum(st.serving_pass for st in lanes)) / plan.lanes
        files += sum(st.unreadable_files for st in lanes)
    out["files_skipped"] = float(files)
    return out

"""The ``format = "tokens"`` reader: memory-mapped shards (``Shard``) read part by part (``TokensPartStream``)
in the same order and with the same held-out split as the text reader, behind the loader workers'
backend interface (``TokensBackend``). The layout and the manifest checks are in ``tinytitan.data.shards``.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from tinytitan.data.encode import TOKEN_DTYPE
from tinytitan.data.files import Part, row_range
from tinytitan.data.plan import SourcePlan
from tinytitan.data.shards import shard_base
from tinytitan.data.text_backend import Fetch

_I64 = np.int64


class Shard:
    """One memory-mapped shard and its index."""

    def __init__(self, base: str):
        size = os.path.getsize(base + ".tok")
        self.tokens = np.memmap(base + ".tok", dtype=TOKEN_DTYPE, mode="r") if size else np.empty(0, TOKEN_DTYPE)
        with np.load(base + ".idx.npz") as idx:
            self.starts = idx["starts"]
            self.seg = idx["seg"]
            self.raw = idx["raw"]
            self.empty = idx["empty"]
            self.excluded = idx["excluded"]
            self.errors = idx["errors"]
        self.base = base

    def part_docs(self, part: Part, rows: int | None):
        """Kept documents of a part: (indices into the shard, part-local t), plus empty/excluded t's."""

        def local(seg, raw):
            mask = seg == part.segment
            raw = raw[mask]
            if rows is None:
                sel = (raw - part.index) % part.count == 0
                return np.flatnonzero(mask)[sel], (raw[sel] - part.index) // part.count
            lo, hi = row_range(rows, part.index, part.count)
            sel = (raw >= lo) & (raw < hi)
            return np.flatnonzero(mask)[sel], raw[sel] - lo

        kept_idx, kept_t = local(self.seg, self.raw)
        _, empty_t = local(self.empty[:, 0], self.empty[:, 1])
        _, excl_t = local(self.excluded[:, 0], self.excluded[:, 1])
        error_t = None
        for seg, raw in self.errors.tolist():
            if seg == part.segment:
                if rows is None:
                    error_t = max(0, -(-(raw - part.index) // part.count))
                else:
                    lo, _ = row_range(rows, part.index, part.count)
                    error_t = max(0, raw - lo)
        return kept_idx, kept_t, empty_t, excl_t, error_t


class TokensPartStream:
    """Reads one part from a shard; returns views of the memory map where documents are contiguous."""

    def __init__(self, shard: Shard, src: SourcePlan, part_index: int, start: int, count_from: int, budget: int):
        part = src.parts[part_index]
        self.shard = shard
        self.name = shard.base
        kept_idx, kept_t, empty_t, excl_t, error_t = shard.part_docs(part, src.segment_rows(part))
        lo_t = max(start, src.holdout_t(part))
        sel = kept_t >= lo_t
        self.idx, self.t = kept_idx[sel], kept_t[sel]
        self.empty_t = np.sort(empty_t[(empty_t >= lo_t) & (empty_t >= count_from)])
        self.excl_t = np.sort(excl_t[(excl_t >= lo_t) & (excl_t >= count_from)])
        self.error_t = error_t
        self.count_from = count_from
        self.pos = 0
        self.next_t = start
        self.budget = budget

    def fetch(self) -> Fetch:
        idx, ts, sh = self.idx, self.t, self.shard
        a = self.pos
        if a < len(idx):
            # take documents up to the token budget (at least one)
            first = sh.starts[idx[a]]
            ahead = idx[a : a + 65536]
            limit = np.searchsorted(sh.starts[ahead + 1] - first, self.budget, side="right")
            b = a + max(1, int(limit))
            sel = idx[a:b]
            lens = sh.starts[sel + 1] - sh.starts[sel]
            if sel[-1] - sel[0] == b - a - 1:  # contiguous in the shard: a view
                tokens = sh.tokens[sh.starts[sel[0]] : sh.starts[sel[-1] + 1]]
            else:
                tokens = np.concatenate([sh.tokens[sh.starts[i] : sh.starts[i + 1]] for i in sel.tolist()])
            starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(_I64)
            doc_t = ts[a:b]
            self.pos = b
            done = b == len(idx)
            lo_t, hi_t = self.next_t, int(doc_t[-1]) + 1
        else:
            tokens, starts, doc_t = np.empty(0, TOKEN_DTYPE), np.empty(0, _I64), np.empty(0, _I64)
            done = True
            lo_t, hi_t = self.next_t, self.next_t
        if done:  # trailing empty/excluded documents belong to this fetch
            hi_t = max(
                hi_t,
                int(self.empty_t[-1]) + 1 if self.empty_t.size else 0,
                int(self.excl_t[-1]) + 1 if self.excl_t.size else 0,
            )
        empty = int(((self.empty_t >= lo_t) & (self.empty_t < hi_t)).sum())
        excluded = int(((self.excl_t >= lo_t) & (self.excl_t < hi_t)).sum())
        docs = int((doc_t >= self.count_from).sum())
        error = None
        error_t = 0
        if done and self.error_t is not None:
            error = f"{self.name}: the source file could not be read to the end when it was prepared"
            error_t = max(self.error_t, self.next_t)
        self.next_t = hi_t
        return Fetch(tokens, starts, doc_t, hi_t, done, docs, empty, excluded, error, error_t)

    def close(self):
        pass


class TokensBackend:
    """Parts come from the memory-mapped shards of ``prepared_dir``."""

    def __init__(self, prepared_dir: str, budget_tokens: int = 1 << 20, cache: int = 64):
        self.dir = prepared_dir
        self.budget = budget_tokens
        self.cache: OrderedDict[str, Shard] = OrderedDict()
        self.cache_size = cache

    def shard(self, src: SourcePlan, rel: str) -> Shard:
        base = shard_base(self.dir, src.name, rel)
        sh = self.cache.get(base)
        if sh is None:
            sh = Shard(base)
            self.cache[base] = sh
            if len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(base)
        return sh

    def open(self, src: SourcePlan, part_index: int, start: int, count_from: int):
        part = src.parts[part_index]
        return TokensPartStream(
            self.shard(src, src.files[part.file].rel), src, part_index, start, count_from, self.budget
        )

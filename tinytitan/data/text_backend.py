"""Where a lane's tokens come from with ``format = "text"``: a part's documents, read and tokenized.

A lane asks its backend for the next batch of a part (a ``Fetch``); the text backend reads the
source files and tokenizes on the fly, the tokens backend (``tinytitan.data.shards``) reads
prepared shards. Both return the same ``Fetch``, so lanes cannot tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinytitan.data.files import ReadError, iter_part
from tinytitan.data.plan import SourcePlan


@dataclass
class Fetch:
    tokens: np.ndarray  # uint32: BOS d0 EOS BOS d1 EOS ...
    starts: np.ndarray  # int64: start of every document in tokens
    ts: np.ndarray  # int64: index of every document inside its part
    next_t: int  # index of the next unread document of the part
    done: bool  # the part is finished (read to the end, or failed)
    docs: int = 0
    empty: int = 0
    excluded: int = 0
    error: str | None = None
    error_t: int = 0


_EMPTY_I64 = np.empty(0, np.int64)


class TextPartStream:
    """Reads and tokenizes one part, batch by batch."""

    def __init__(self, src: SourcePlan, part_index: int, start: int, count_from: int, encoder, budget: int):
        part = src.parts[part_index]
        self.part = part
        info = src.files[part.file]
        self.it = iter_part(src.opener, info, part, start, src.filter())
        self.next_t = start
        self.count_from = count_from
        self.encoder = encoder
        self.budget = budget
        self.holdout_t = src.holdout_t(part)

    def fetch(self) -> Fetch:
        texts: list[str] = []
        ts: list[int] = []
        nbytes = empty = excluded = 0
        done = False
        error = None
        error_t = 0
        count_from, holdout_t = self.count_from, self.holdout_t
        try:
            while nbytes < self.budget:
                try:
                    t, text = next(self.it)
                except StopIteration:
                    done = True
                    break
                self.next_t = t + 1
                if t < holdout_t:
                    continue
                if text is None:
                    excluded += t >= count_from
                elif not text or text.isspace():
                    empty += t >= count_from
                else:
                    texts.append(text)
                    ts.append(t)
                    nbytes += len(text)
        except ReadError as e:
            done, error, error_t = True, str(e), self.next_t
        tokens, starts = self.encoder.encode_docs(texts)
        ts_arr = np.asarray(ts, np.int64) if ts else _EMPTY_I64
        docs = int((ts_arr >= count_from).sum()) if ts else 0
        return Fetch(tokens, starts, ts_arr, self.next_t, done, docs, empty, excluded, error, error_t)

    def close(self):
        self.it.close()


class TextBackend:
    """Documents come from the source files and are tokenized on the fly."""

    def __init__(self, encoder, budget_bytes: int):
        self.encoder = encoder
        self.budget = budget_bytes

    def open(self, src: SourcePlan, part_index: int, start: int, count_from: int):
        return TextPartStream(src, part_index, start, count_from, self.encoder, self.budget)

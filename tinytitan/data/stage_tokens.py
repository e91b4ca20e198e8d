"""The stages of a run as the loader counts them: global window ranges (``stage_records``, what the sampler
switches on and a checkpoint records) and tokens per source in every stage (``StageTokens``)."""

from __future__ import annotations

import numpy as np

from tinytitan.data.loader_state import StageRecord
from tinytitan.data.mixture import StagedSampler
from tinytitan.data.stages import StageSpan


def stage_records(spans: list[StageSpan], windows_per_step: int) -> list[StageRecord]:
    """The stages as global window ranges (what the sampler switches on, and what a checkpoint records)."""
    last = len(spans) - 1
    return [
        StageRecord(
            name=span.name,
            first_window=(span.first_step - 1) * windows_per_step,
            end_window=None if span.index == last else span.last_step * windows_per_step,
            weights=dict(span.weights),
            first_step=span.first_step,
            last_step=None if span.index == last else span.last_step,
        )
        for span in spans
    ]


class StageTokens:
    """Tokens per source in every stage, over all ranks: a pure function of the global window count.

    The sampler decides the source of every window, so the counts from ``since`` on are counted from
    it (``seq_len`` tokens a window); ``base`` holds the counts before ``since`` (from a checkpoint,
    where ``seq_len`` may have differed).
    """

    CHUNK = 1 << 20

    def __init__(self, sampler: StagedSampler, n_sources: int, seq_len: int, since: int, base: np.ndarray):
        self.sampler, self.n_sources, self.seq_len = sampler, n_sources, seq_len
        self.counted_to = since
        self.counts = base.astype(np.int64).copy()  # [stage, source] tokens

    def at(self, windows: int) -> np.ndarray:
        while self.counted_to < windows:
            g = np.arange(self.counted_to, min(windows, self.counted_to + self.CHUNK), dtype=np.int64)
            cells = self.sampler.stages(g) * self.n_sources + self.sampler.sources(g)
            self.counts += np.bincount(cells, minlength=self.counts.size).reshape(self.counts.shape) * self.seq_len
            self.counted_to = int(g[-1]) + 1
        return self.counts

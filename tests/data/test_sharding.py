"""Sharding over dp ranks and loader workers, and resume on another number of ranks."""

from __future__ import annotations

import collections

import numpy as np
import torch

from tests.data.fixtures import (
    assert_lanes_continue,
    doc_ids,
    job_config,
    loader,
    reference_cursors,
    row_sources,
)
from tinytitan.data.plan import lane_parts
from tinytitan.data.planner import make_plan


def windows(batch) -> torch.Tensor:
    inputs, labels = batch
    return torch.cat([inputs["input"], labels[:, -1:]], dim=1)


def test_lanes_partition_the_parts_of_every_pass(corpus):
    plan = make_plan(job_config(corpus, data_overrides={"lanes": 8}).data)
    for src in plan.sources:
        orders = []
        for p in range(4):
            got = np.concatenate([lane_parts(plan.seed, src, plan.lanes, lane, p) for lane in range(plan.lanes)])
            assert sorted(got.tolist()) == list(range(len(src.parts)))  # every part once per pass
            assert all(len(lane_parts(plan.seed, src, plan.lanes, lane, p)) >= 1 for lane in range(plan.lanes))
            orders.append(got.tolist())
        assert len({tuple(o) for o in orders}) > 1  # reshuffled every pass


def test_no_document_twice_across_ranks_and_workers(corpus):
    kw = dict(world=2, workers=2, batch=2, seq_len=32)
    loaders = [loader(corpus, rank=r, **kw) for r in range(2)]
    its = [iter(dl) for dl in loaders]
    seen = collections.Counter()
    per_rank = [set(), set()]
    for _ in range(12):  # well under one pass of either source
        for r, it in enumerate(its):
            ids = doc_ids(windows(next(it)))
            seen.update(ids)
            per_rank[r].update(ids)
    for dl in loaders:
        dl.close()
    assert seen and max(seen.values()) == 1, [i for i, n in seen.items() if n > 1]
    assert per_rank[0] and per_rank[1]


def test_workers_deal_batches_like_ranks(corpus):
    """One rank with 2 workers reads exactly what 2 ranks with no workers read, interleaved."""
    ranks = [loader(corpus, rank=r, world=2, batch=3, seq_len=40) for r in range(2)]
    expected = [[windows(b) for b in _take(dl, 6)] for dl in ranks]
    dl = loader(corpus, world=1, workers=2, batch=3, seq_len=40)
    got = [windows(b) for b in _take(dl, 12)]
    dl.close()
    for b, w in enumerate(got):
        assert torch.equal(w, expected[b % 2][b // 2])


def test_worker_exact_resume(corpus):
    kw = dict(world=1, workers=2, batch=3, seq_len=40)
    ref = loader(corpus, **kw)
    ref_batches = [windows(b) for b in _take(ref, 14)]
    ref.close()
    first = loader(corpus, **kw)
    _take(first, 7)
    state = first.state_dict()
    stats = first.stats()
    first.close()
    resumed = loader(corpus, **kw)
    resumed.load_state_dict(state)
    assert resumed.stats() == stats
    got = [windows(b) for b in _take(resumed, 7)]
    resumed.close()
    for a, b in zip(ref_batches[7:], got, strict=True):
        assert torch.equal(a, b)


def _take(dl, n):
    it = iter(dl)
    return [next(it) for _ in range(n)]


def test_resume_on_fewer_and_more_readers_continues_every_lane(corpus):
    """2 readers -> 1 -> 2 (lanes re-dealt each time), the 1-reader phase with another batch (4 -> 2 -> 4): every
    lane sits where a single uninterrupted reader's lane sits after the same tokens, so no document of any lane is
    repeated or skipped. 2 -> 1 -> 2 dp ranks through DCP: test_distributed.py."""
    kw = dict(batch=4, seq_len=48)
    reference = reference_cursors(corpus, 1200, seq_len=48)
    two = loader(corpus, workers=2, **kw)  # one rank, two reader processes
    _take(two, 10)
    state, stats = two.state_dict(), two.stats()
    two.close()
    assert assert_lanes_continue(reference, state) >= 4

    one = loader(corpus, **{**kw, "batch": 2})  # another batch: the stream goes on from the same window
    one.load_state_dict(state)
    assert one.stats() == stats  # counters travel with their lanes
    _take(one, 60)
    state = one.state_dict()
    assert assert_lanes_continue(reference, state) >= 8

    two = loader(corpus, workers=2, **kw)
    two.load_state_dict(state)
    _take(two, 80)
    state, stats = two.state_dict(), two.stats()
    two.close()
    assert assert_lanes_continue(reference, state) >= 12
    # counters carry over: the run's totals are the sum of every phase's windows
    assert stats["tokens/slimpajama"] + stats["tokens/starcoderdata"] == (10 * 4 + 60 * 2 + 80 * 4) * 48


def test_mixture_holds_over_a_resume_on_another_world_size(corpus):
    """Token shares of what the model receives (rows attributed by document ids), across a 2 -> 1 reader resume."""
    kw = dict(batch=8, seq_len=256)
    tokens = collections.Counter()
    two = loader(corpus, workers=2, **kw)
    for inputs, _labels in _take(two, 60):
        tokens.update(row_sources(corpus, inputs["input"]))  # one window = seq_len tokens of one source
    state = two.state_dict()
    two.close()
    one = loader(corpus, **kw)
    one.load_state_dict(state)
    for inputs, _labels in _take(one, 60):
        tokens.update(row_sources(corpus, inputs["input"]))
    total = sum(tokens.values())
    assert total == (60 + 60) * 8
    assert abs(tokens["slimpajama"] / total - 0.7) < 0.01

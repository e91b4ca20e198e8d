"""Sharding over dp ranks and loader workers, and resume on another number of ranks."""

from __future__ import annotations

import collections

import numpy as np
import torch

from tests.data.fixtures import doc_ids, job_config, loader, row_sources
from tinytitan.data.loader import merge_rank_states
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


def _traced(dl, n):
    """n batches, and (source, lane, window) for every window."""
    dl.trace = []
    out = []
    for b in _take(dl, n):
        out.extend(windows(b))
    return [(s, lane, w) for (s, lane), w in zip(dl.trace, out, strict=True)]


def _canonical(corpus, n_batches, **kw):
    """Every lane's windows in order, read by a single reader that owns all lanes."""
    per_lane = collections.defaultdict(list)
    for s, lane, w in _traced(loader(corpus, world=1, **kw), n_batches):
        per_lane[(s, lane)].append(w)
    return per_lane


def _check_lanes_continue(canonical, phases):
    """Each lane's windows over all phases (in phase order) are a prefix of its canonical stream."""
    per_lane = collections.defaultdict(list)
    for phase in phases:
        for s, lane, w in phase:
            per_lane[(s, lane)].append(w)
    assert per_lane
    for key, ws in per_lane.items():
        ref = canonical[key]
        assert len(ws) <= len(ref), key
        for i, w in enumerate(ws):
            assert torch.equal(w, ref[i]), (key, i)


def test_resume_on_fewer_and_more_ranks_continues_every_lane(corpus):
    kw = dict(batch=4, seq_len=48)
    canonical = _canonical(corpus, 400, **kw)

    # 2 ranks -> 1 rank
    two = [loader(corpus, rank=r, world=2, **kw) for r in range(2)]
    phase1 = [x for dl in two for x in _traced(dl, 9)]
    state = merge_rank_states(two)
    one = loader(corpus, world=1, **kw)
    one.load_state_dict(state)
    phase2 = _traced(one, 60)
    _check_lanes_continue(canonical, [phase1, phase2])
    # lanes that phase 1 left half-read continued in phase 2
    assert {(s, lane) for s, lane, _ in phase1} & {(s, lane) for s, lane, _ in phase2}
    # counters carry over: the run's totals are the sum of both phases
    total = sum(dl.stats()["tokens/slimpajama"] + dl.stats()["tokens/starcoderdata"] for dl in two)
    assert one.stats()["tokens/slimpajama"] + one.stats()["tokens/starcoderdata"] == total + 60 * 4 * 48

    # 1 rank -> 2 ranks (continuing the same stream)
    state = one.state_dict()
    two = [loader(corpus, rank=r, world=2, **kw) for r in range(2)]
    for dl in two:
        dl.load_state_dict(state)
    phase3 = [x for dl in two for x in _traced(dl, 30)]
    _check_lanes_continue(canonical, [phase1, phase2, phase3])


def test_mixture_holds_over_a_resume_on_another_world_size(corpus):
    """Token shares of what the model receives (rows attributed by document ids), across a 2 -> 1 rank resume."""
    kw = dict(batch=8, seq_len=256)
    tokens = collections.Counter()
    two = [loader(corpus, rank=r, world=2, **kw) for r in range(2)]
    for dl in two:
        for inputs, _labels in _take(dl, 30):
            tokens.update(row_sources(corpus, inputs["input"]))  # one window = seq_len tokens of one source
    one = loader(corpus, world=1, **kw)
    one.load_state_dict(merge_rank_states(two))
    for inputs, _labels in _take(one, 60):
        tokens.update(row_sources(corpus, inputs["input"]))
    total = sum(tokens.values())
    assert total == (2 * 30 + 60) * 8
    assert abs(tokens["slimpajama"] / total - 0.7) < 0.01

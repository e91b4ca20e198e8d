"""The loader's state through torch.distributed.checkpoint in real gloo process groups: 2 -> 2, 2 -> 1, 1 -> 2."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as tmp

from tests.data.dist_job import run
from tests.data.fixtures import assert_lanes_continue, reference_cursors

KW = dict(batch=4, seq_len=48)
N = 8


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _windows(batches):
    return [torch.cat([i["input"], lab[:, -1:]], dim=1) for i, lab in batches]


def _tokens(stats):
    return stats["tokens/slimpajama"] + stats["tokens/starcoderdata"]


def test_dcp_resume_on_same_fewer_and_more_ranks(corpus, tmp_path):
    tmp.spawn(run, args=(_port(), corpus, str(tmp_path), N, KW), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    # DCP stores one copy of the loader state, not one per rank
    meta = dcp.FileSystemReader(str(tmp_path / "ckpt-2ranks")).read_metadata()
    assert list(meta.state_dict_metadata) == ["dataloader.tinytitan_data"]

    # 2 -> 2: the token stream continues exactly
    for rec in ranks:
        for a, b in zip(_windows(rec["after"]["batches"]), _windows(rec["resumed_2to2"]["batches"]), strict=True):
            assert torch.equal(a, b)
        assert rec["after"]["stats"] == rec["resumed_2to2"]["stats"]

    # 2 -> 1 -> 2: every lane sits where an uninterrupted single reader's lane sits after the same tokens
    # (no document repeated or skipped), and the counters carry the whole run
    reference = reference_cursors(corpus, 600, seq_len=KW["seq_len"])
    solo = ranks[0]["resumed_2to1"]
    assert ranks[0]["before"]["state"] == ranks[1]["before"]["state"]  # one document, the same on every rank
    moved = [
        assert_lanes_continue(reference, rec["state"]) for rec in (ranks[0]["before"], solo, ranks[0]["resumed_1to2"])
    ]
    assert 0 < moved[0] < moved[1] <= moved[2]
    assert _tokens(solo["stats"]) == sum(_tokens(rec["before"]["stats"]) for rec in ranks) + 2 * N * 4 * 48
    assert sum(_tokens(rec["resumed_1to2"]["stats"]) for rec in ranks) == _tokens(solo["stats"]) + 2 * N * 4 * 48
    assert os.path.isdir(tmp_path / "ckpt-1rank")

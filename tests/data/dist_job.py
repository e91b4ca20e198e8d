"""Runs in 2 spawned gloo processes for test_distributed: the loader through DCP save/load."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from tests.data.fixtures import loader


def _read(dl, n):
    """n batches, then the loader's counters and its checkpoint state (a collective: every rank of its group)."""
    it = iter(dl)
    batches = [next(it) for _ in range(n)]
    return {"batches": batches, "stats": dl.stats(), "state": dl.state_dict()}


def run(rank: int, port: int, corpus, tmp: str, n: int, kw: dict) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ckpt2, ckpt1 = os.path.join(tmp, "ckpt-2ranks"), os.path.join(tmp, "ckpt-1rank")
    out = {}
    try:
        # 2 ranks: read n batches, checkpoint, read n more
        dl = loader(corpus, rank=rank, world=2, **kw)
        out["before"] = _read(dl, n)
        dcp.save({"dataloader": dl}, checkpoint_id=ckpt2)
        out["after"] = _read(dl, n)

        # 2 -> 2
        dl = loader(corpus, rank=rank, world=2, **kw)
        dcp.load({"dataloader": dl}, checkpoint_id=ckpt2)
        out["resumed_2to2"] = _read(dl, n)

        # 2 -> 1: rank 0 alone, in a process group of one; it checkpoints again after 2n batches
        solo = dist.new_group([0])
        if rank == 0:
            dl = loader(corpus, rank=0, world=1, **kw)
            dl.process_group = solo
            dcp.load({"dataloader": dl}, checkpoint_id=ckpt2, process_group=solo)
            out["resumed_2to1"] = _read(dl, 2 * n)
            dcp.save({"dataloader": dl}, checkpoint_id=ckpt1, process_group=solo)
        dist.barrier()

        # 1 -> 2
        dl = loader(corpus, rank=rank, world=2, **kw)
        dcp.load({"dataloader": dl}, checkpoint_id=ckpt1)
        out["resumed_1to2"] = _read(dl, n)
        torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()

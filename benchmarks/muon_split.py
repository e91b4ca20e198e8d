"""What splitting Muon's matrices over the ranks saves, on CPU, under real FSDP (gloo).

Spawns ``--world`` gloo processes (one thread each), shards torchtitan's Llama 3 model of ``--flavor``
with ``fully_shard`` as training does, gives every hidden matrix a random row-sharded update, and times,
alternated on the same updates: every rank gathering and orthogonalizing every matrix (``orthogonalize``,
``full_tensor()``: the first version) against one owner rank per matrix (``orthogonalize_all``: gather,
Newton-Schulz once, scatter). Prints each one's median over ``--repeat`` rounds, rank 0's clock, and
checks that both give the same rows.

    python benchmarks/muon_split.py                   # debug, 2 processes
    python benchmarks/muon_split.py --world 2 --flavor nano --repeat 3
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run(rank: int, world: int, port: int, flavor: str, repeat: int) -> None:
    from torch.distributed.fsdp import fully_shard

    from tinytitan.models import DEFAULT_MUON_PARAMS, assign_groups, flavor_args
    from tinytitan.rank.loss import TinyTransformer
    from tinytitan.rank.muon import orthogonalize, orthogonalize_all

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="DTensor random operators")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = TinyTransformer(flavor_args(flavor))
        for block in model.layers.values():
            fully_shard(block)
        fully_shard(model)
        named = list(model.named_parameters())
        roles = assign_groups([(n, tuple(p.shape)) for n, p in named], list(DEFAULT_MUON_PARAMS))
        updates = [torch.randn_like(p) for n, p in named if roles[n] == "muon"]
        timings = {"every rank, every matrix": [], "one owner per matrix": []}
        for _ in range(repeat + 1):  # the first round warms up
            for label, fn in (("every rank, every matrix", lambda: [orthogonalize(u, 5) for u in updates]),
                              ("one owner per matrix", lambda: orthogonalize_all(updates, 5))):  # fmt: skip
                dist.barrier()
                start = time.perf_counter()
                out = fn()
                dist.barrier()
                timings[label].append(time.perf_counter() - start)
                outs = timings.setdefault("_out", {})
                outs[label] = [o.to_local() for o in out]
        a, b = timings["_out"].values()
        same = all(torch.allclose(x, y, atol=1e-6, rtol=1e-5) for x, y in zip(a, b, strict=True))
        if rank == 0:
            print(f"{flavor}, {world} gloo processes, {len(updates)} matrices, median of {repeat}:")
            for label in ("every rank, every matrix", "one owner per matrix"):
                print(f"  {label:26s} {statistics.median(timings[label][1:]):.3f} s")
            print(f"  same rows: {same}")
    finally:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--flavor", default="debug")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(args.world, port, args.flavor, args.repeat), nprocs=args.world)


if __name__ == "__main__":
    main()

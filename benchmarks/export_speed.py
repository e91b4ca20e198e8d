#!/usr/bin/env python3
"""How fast and how lean is `tinytitan export`? Compared with copying the checkpoint's bytes.

    python benchmarks/export_speed.py                 # Tiny: ~18 GB checkpoint, ~6 GB export
    python benchmarks/export_speed.py --flavor nano   # a quick run

1. Writes a full-training-state checkpoint of random weights for the flavor, the
   way torchtitan does: 2 processes (gloo), FSDP-sharded model, flattened AdamW
   state (both moments), lr_scheduler, train_state and dataloader entries.
2. Times a plain copy of the checkpoint folder (``cp -r``, then ``sync``).
3. Times ``tinytitan export --format hf --no-verify`` (then ``sync``) in a child
   process, and reads that child's peak resident memory from ``wait4``.

Prints the time ratio (target <= 1.5x the copy) and the peak RSS relative to the
exported weights (target <= 1.3x). Not part of the test suite. Needs disk space
for the checkpoint, its copy and the export (about 30 GB for Tiny).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _writer(rank: int, world: int, flavor: str, out: str, port: int) -> None:
    """One rank of the checkpoint writer: FSDP model + AdamW state, saved with DCP like torchtitan."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard
    from torchtitan.models.llama3 import Transformer

    from tinytitan.models import flavor_args

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)
    with torch.device("meta"):
        model = Transformer(flavor_args(flavor))
    for layer in model.layers.values():
        fully_shard(layer)
    fully_shard(model)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.to_local().normal_(0.0, 0.02)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        # Both moments alias the weights: the same bytes on disk as real moments, no extra memory here.
        optimizer.state[p] = {"step": torch.tensor(1000.0), "exp_avg": p.detach(), "exp_avg_sq": p.detach()}
    state = {
        **get_model_state_dict(model),
        "optimizer": get_optimizer_state_dict(
            model, optimizer, options=StateDictOptions(flatten_optimizer_state_dict=True)
        ),
        "lr_scheduler": {"last_epoch": 1000, "base_lrs": [1e-4]},
        "train_state": {"step": 1000, "ntokens_seen": 1000 * 2**21},
        "dataloader": {f"dp_rank_{rank}": os.urandom(1024)},
    }
    dcp.save(state, checkpoint_id=out)
    dist.barrier()
    dist.destroy_process_group()


def write_checkpoint(flavor: str, out: Path, nproc: int = 2) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_writer, args=(nproc, flavor, str(out), _free_port()), nprocs=nproc)


def _timed_child(cmd: list[str]) -> tuple[float, int]:
    """Wall time (including a final sync) and peak RSS in bytes of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    os.sync()
    return time.perf_counter() - start, usage.ru_maxrss * 1024  # ru_maxrss is KiB on Linux


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavor", default="tiny", help="model flavor (default tiny; nano for a quick run)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tinytitan-bench-", dir=args.workdir))
    ckpt, copy, out = work / "checkpoint" / "step-1000", work / "copy", work / "export"
    try:
        t0 = time.perf_counter()
        write_checkpoint(args.flavor, ckpt)
        os.sync()
        print(
            f"wrote {args.flavor} checkpoint: {_size(ckpt) / 1e9:.2f} GB in {time.perf_counter() - t0:.1f}s", flush=True
        )

        copy_s, _ = _timed_child(["cp", "-r", str(ckpt), str(copy)])
        shutil.rmtree(copy)
        _, idle_rss = _timed_child([sys.executable, "-c", "import tinytitan.export.pipeline, transformers, torch"])
        export_cmd = [
            sys.executable, "-m", "tinytitan.cli", "export", str(ckpt), "--out", str(out), "--format", "hf",
            "--no-verify", "--flavor", args.flavor, "--dtype", args.dtype, "--tokenizer", "tinytitan/assets/tokenizer",
        ]  # fmt: skip
        export_s, peak = _timed_child(export_cmd)
        exported = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        print(
            f"\n{args.flavor}: checkpoint {_size(ckpt) / 1e9:.2f} GB, exported weights {exported / 1e9:.2f} GB ({args.dtype})"
        )
        print(f"copy (cp -r + sync)      {copy_s:8.1f} s")
        print(f"export --no-verify       {export_s:8.1f} s   ratio {export_s / copy_s:.2f}x (target <= 1.5x)")
        print(
            f"peak RSS of the export   {peak / 1e9:8.2f} GB  = {peak / exported:.2f}x the exported weights (target <= 1.3x)"
        )
        print(f"  of which imports alone {idle_rss / 1e9:8.2f} GB (python + torch + transformers)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

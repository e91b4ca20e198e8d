#!/usr/bin/env python3
"""Benchmark-task speed: torchtitan's model in process (TitanLM) vs lm-eval's HFLM on the export.

Both score the same loglikelihood requests of one task (default: the shipped offline task)
with the same batch size; prints requests/s of each and their ratio. The export is made
into a temporary folder from the checkpoint first.

    python benchmarks/eval_speed.py --checkpoint outputs/debug/checkpoint --config train_configs/llama3_debug.toml
    python benchmarks/eval_speed.py ... --device cuda      # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def task_requests(task_name: str, limit: int | None):
    from lm_eval.tasks import get_task_dict

    from tinytitan.observe.harness import task_manager

    task = get_task_dict([task_name], task_manager())[task_name]
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return [inst for inst in task.instances for _ in range(inst.repeats)]


def rate(lm, requests, repeats: int) -> float:
    lm.loglikelihood(requests[: min(len(requests), 8)], disable_tqdm=True)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        lm.loglikelihood(requests, disable_tqdm=True)
        if "cuda" in str(getattr(lm, "device", "")):
            import torch

            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(requests) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="outputs/debug/checkpoint", help="a step folder or checkpoint folder")
    parser.add_argument("--config", default="train_configs/llama3_debug.toml")
    parser.add_argument("--task", default="tinytitan_sample_order")
    parser.add_argument("--limit", type=int, default=128, help="documents of the task (default 128)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    from tinytitan.export.hf import export_hf
    from tinytitan.observe.harness import hf_harness_model, titan_lm
    from tinytitan.observe.loading import from_checkpoint

    requests = task_requests(args.task, args.limit)
    lm = from_checkpoint(args.checkpoint, args.config, "latest", args.device)
    ours = titan_lm(lambda ids: lm.module(ids), lm.tokenizer, lm.max_seq_len, lm.device, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(args.checkpoint, Path(tmp) / "hf", config=args.config, step="latest")
        theirs = hf_harness_model(Path(tmp) / "hf", args.batch_size, args.device)
        hf_rate = rate(theirs, requests, args.repeats)
    titan_rate = rate(ours, requests, args.repeats)
    print(f"{len(requests)} loglikelihood requests of {args.task}, batch {args.batch_size}, {args.device}")
    print(f"in process (TitanLM): {titan_rate:10.1f} requests/s")
    print(f"HFLM on the export:   {hf_rate:10.1f} requests/s")
    print(f"ratio (TitanLM/HFLM): {titan_rate / hf_rate:10.2f}")


if __name__ == "__main__":
    main()

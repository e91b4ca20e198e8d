"""What a stage switch costs the data loader: the time of each batch around the boundary.

Runs the loader of ``train_configs/llama3_debug_stages.toml`` alone (no model) as dp rank 0 of the
config's 2 ranks, in this process (``num_workers = 0``: every cost shows in the batch time; with
workers the prefetch hides it), and prints the time of the loader's first batch (its start-up),
the median and 90th percentile of the batches of stage 1, and of the first batches of stage 2,
where the cooldown's new source (``pydocs``) opens its first files. The switch itself starts
nothing: the sampler changes mixture at the boundary window, so its cost is what the new mixture
reads.

    python benchmarks/stage_switch.py [--config train_configs/llama3_debug_stages.toml] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one_round(config: str, after: int) -> tuple[float, list[float], int]:
    """(seconds to build the loader, seconds of every batch, the first batch index of stage 2)."""
    from tinytitan.config import load_job_config
    from tinytitan.data.build import build_dataloader
    from tinytitan.data.planner import forget_plans
    from tinytitan.rank.spec import build_tokenizer

    forget_plans()  # a rank lists its files once: measure that too
    job = load_job_config(config, [])
    started = time.perf_counter()
    loader = build_dataloader(dp_world_size=2, dp_rank=0, tokenizer=build_tokenizer(job), job_config=job)
    build = time.perf_counter() - started
    boundary = loader.stages[1].first_window // (loader.batch_size * loader.dp_world_size)
    times = []
    it = iter(loader)
    for _ in range(boundary + after):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    loader.close()
    return build, times, boundary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="train_configs/llama3_debug_stages.toml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--after", type=int, default=20, help="batches of stage 2 to time")
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        build, times, boundary = one_round(args.config, args.after)
        stage1, stage2 = times[1:boundary], times[boundary:]
        rows.append((build, times[0], statistics.mean(stage1), sorted(stage1)[int(0.9 * len(stage1))], stage2))
    print(f"{args.config}: dp rank 0 of 2, batch 8 x 256, in-process loader; stage 2 starts at batch {boundary}")
    print("round  build_s  first_batch_s  stage1_mean_ms  stage1_p90_ms  stage2_first_5_ms")
    for i, (build, first, mean, p90, stage2) in enumerate(rows):
        firsts = " ".join(f"{t * 1e3:.1f}" for t in stage2[:5])
        print(f"{i:>5}  {build:7.2f}  {first:13.2f}  {mean * 1e3:14.2f}  {p90 * 1e3:13.2f}  {firsts}")
    extra = [sum(stage2[:5]) - 5 * mean for _, _, mean, _, stage2 in rows]
    print(f"switch cost: the first 5 batches of stage 2 minus 5 x stage 1's mean batch, median of rounds: "
          f"{statistics.median(extra):+.3f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

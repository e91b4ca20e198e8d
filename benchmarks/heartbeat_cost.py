"""What the progress heartbeats (README: Faults and resuming) cost a training step.

Real runs of the debug model through the launcher (CPU: 2 gloo processes), alternated so that
the machine's load drifts over all variants alike:
- ``off``: the ranks record no phase and write no file (benchmarks/heartbeats_off.py);
- ``on``: as shipped, with the default [hang] stall_seconds (half of the 100 s collective
  timeout: a write every 5 s at most);
- ``on-fast``: flushed every 0.3 s (--comm.train_timeout_seconds 6 with --hang.stall_seconds 0: detection
  off, so that a step slowed by the machine's load is not taken for a hang).
A step's time is the gap between rank 0's consecutive step log lines; the first WARMUP steps
of each run are left out. Prints each run's median step time, then each variant's median of
the per-round ratios to ``off``, in percent. On a shared machine the runs' spread is larger
than the effect; so it first measures, in this process, the work itself: a step's in-memory
updates (begin_step and the 7 phase changes a step makes) and one file write.

    python benchmarks/heartbeat_cost.py                       # 3 rounds of 3 runs, ~8 minutes on 2 cores
    python benchmarks/heartbeat_cost.py --rounds 5 --steps 60
    python benchmarks/heartbeat_cost.py --rounds 0            # the work only, in seconds
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_LINE = re.compile(r"^\[rank0\]:\[titan\] (\S+ \S+) - root - INFO - .*step:\s+(\d+)\s")
WARMUP = 3
VARIANTS = {
    "off": ["--experimental.custom_import", "benchmarks.heartbeats_off"],
    "on": [],
    "on-fast": ["--hang.stall_seconds", "0", "--comm.train_timeout_seconds", "6"],
}


def step_seconds(log: str) -> list[float]:
    stamps = {}
    for line in log.splitlines():
        m = STEP_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if m:
            stamps[int(m.group(2))] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return [stamps[s] - stamps[s - 1] for s in sorted(stamps) if s - 1 in stamps and s > WARMUP]


def run(variant: str, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["--job.dump_folder", tmp, "--training.steps", str(steps), "--metrics.log_freq", "1",
                     "--checkpoint.no-enable", "--validation.no-enable", *VARIANTS[variant]]  # fmt: skip
        env = {**os.environ, "LOG_RANK": "0", "CONFIG_FILE": str(REPO / "train_configs/llama3_debug.toml")}
        proc = subprocess.run([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], cwd=REPO, env=env,
                              capture_output=True, text=True)  # fmt: skip
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: training failed ({proc.returncode}):\n{log[-3000:]}")
    return statistics.median(step_seconds(log))


def work_per_step() -> tuple[float, float]:
    """Seconds of the main thread's heartbeat work in one step, and of one file write (the writer thread's)."""
    sys.path.insert(0, str(REPO))
    from tinytitan.rank.heartbeat import HeartbeatWriter
    from tinytitan.run.folder import RunFolder

    phases = ["forward/backward", "forward/backward", "optimizer", "checkpoint", "step end", "data", "data"]
    with tempfile.TemporaryDirectory() as tmp:
        writer = HeartbeatWriter(
            RunFolder.at(tmp), 0, interval_s=3600
        )  # the thread stays asleep: this thread times the work
        steps = 100_000
        start = time.perf_counter()
        for step in range(steps):
            writer.begin_step(step)
            for phase in phases:
                writer.enter(phase)
        per_step = (time.perf_counter() - start) / steps
        writes = 2_000
        start = time.perf_counter()
        for step in range(writes):
            writer.begin_step(steps + step)
            writer.flush()
        per_write = (time.perf_counter() - start) / writes
        writer.close()
    return per_step, per_write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="each round runs every variant once")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    per_step, per_write = work_per_step()
    print(f"work: {per_step * 1e6:.1f} us of in-memory updates per step (main thread); "
          f"{per_write * 1e6:.0f} us per file write (writer thread, at most one per flush interval)", flush=True)  # fmt: skip
    if args.rounds == 0:
        return
    medians: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for variant in order:
            medians[variant].append(run(variant, args.steps))
            print(f"round {r + 1} {variant:<8} median step {medians[variant][-1] * 1000:.1f} ms", flush=True)
    for variant, values in medians.items():
        ratios = [(v / off - 1) * 100 for v, off in zip(values, medians["off"], strict=True)]
        print(f"{variant:<8} median step {statistics.median(values) * 1000:.1f} ms; vs off in the same round: "
              f"median {statistics.median(ratios):+.1f}% (rounds: {', '.join(f'{r:+.1f}%' for r in ratios)})")  # fmt: skip
    step = statistics.median(medians["off"])
    print(f"the work against a {step * 1000:.0f} ms step: {per_step / step * 100:.4f}% in the main thread; "
          f"the writer thread busy {per_write / 5 * 100:.3f}% of the time (a write every 5 s), "
          f"{per_write / 0.2 * 100:.2f}% (every 0.2 s)")  # fmt: skip


if __name__ == "__main__":
    main()

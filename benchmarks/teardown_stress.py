#!/usr/bin/env python3
"""Does a finished training run ever exit non-zero? N short runs back to back, through the launcher.

    python benchmarks/teardown_stress.py            # 30 runs of 3 debug steps, 2 CPU processes
    python benchmarks/teardown_stress.py -n 100 --steps 2

A rank once died of SIGABRT right after its last step, which turns a good run into a failed
SLURM job. Each run here trains, writes a final checkpoint and exits; the script counts
non-zero exits, names their signal, and keeps the logs of failed runs. Not part of the suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(dump: Path, steps: int, timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "NGPU": "2", "LOG_RANK": "0,1", "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "tinytitan.launcher.launch", "--job.dump_folder", str(dump), "--training.steps", str(steps),
           "--training.local_batch_size", "2", "--checkpoint.interval", str(steps), "--validation.no-enable",
           "--metrics.log_freq", "1"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="runs (default 30)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per run (default 3)")
    parser.add_argument("--timeout-s", type=float, default=300, help="give up on one run after this long")
    parser.add_argument("--keep", type=Path, default=Path("outputs/teardown_stress"), help="logs of failed runs")
    args = parser.parse_args()
    failures: list[tuple[int, int, str]] = []
    times = []
    work = Path(tempfile.mkdtemp(prefix="teardown-stress-"))
    try:
        for i in range(args.n):
            rc, seconds, log = one_run(work / f"run{i}", args.steps, args.timeout_s)
            times.append(seconds)
            signal = re.search(r"Signal (\d+) \((SIG\w+)\)", log)
            what = signal.group(2) if signal else ("ok" if rc == 0 else f"exit {rc}")
            print(f"run {i + 1}/{args.n}: exit {rc} ({what}) in {seconds:.1f}s", flush=True)
            if rc != 0:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"run{i}.log").write_text(log)
                failures.append((i, rc, what))
            shutil.rmtree(work / f"run{i}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"non-zero exits: {len(failures)} of {args.n} (median run {sorted(times)[len(times) // 2]:.1f}s)")
    for i, rc, what in failures:
        print(f"  run {i}: exit {rc} ({what}), log in {args.keep / f'run{i}.log'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

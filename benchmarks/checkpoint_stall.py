"""How long training stalls while a checkpoint is saved, with and without async saving, and what a
restart after a killed rank costs. Real runs of the debug model through the launcher (CPU: 2
gloo processes; on a GPU node NGPU and the config apply).

For each ``async_mode``, trains STEPS steps with a checkpoint every INTERVAL steps and reads:
- the blocking part of each save, from torchtitan's "Finished saving the checkpoint (or
  staging ...) in X seconds" line (for async: staging and starting the background write);
- the wall time of each save step and of the other steps, from the ranks' log timestamps.
Then, with --restart, kills one rank after the first checkpoint and measures from the kill to
the first step of the restarted ranks.

    python benchmarks/checkpoint_stall.py                   # disabled vs async, ~3 minutes on 2 cores
    python benchmarks/checkpoint_stall.py --restart --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAVE_LINE = re.compile(r"Finished saving the checkpoint \(or staging if async is enabled\)in ([\d.]+) seconds")
STEP_LINE = re.compile(r"^\[rank0\]:\[titan\] (\S+ \S+) - root - INFO - .*step:\s+(\d+)\s")


def overrides(dump: Path, steps: int, interval: int, mode: str) -> list[str]:
    return ["--job.dump_folder", str(dump), "--training.steps", str(steps), "--training.local_batch_size", "4",
            "--checkpoint.interval", str(interval), "--checkpoint.keep_latest_k", "0", "--metrics.log_freq", "1",
            "--validation.no-enable", "--checkpoint.async_mode", mode]  # fmt: skip


def env() -> dict:
    return {**os.environ, "LOG_RANK": "0", "CONFIG_FILE": os.environ.get("CONFIG_FILE", "")} | (
        {} if os.environ.get("CONFIG_FILE") else {"CONFIG_FILE": str(REPO / "train_configs/llama3_debug.toml")}
    )


def step_times(log: str) -> dict[int, float]:
    """step -> seconds since the previous logged step (rank 0's timestamps)."""
    stamps = {}
    for line in log.splitlines():
        m = STEP_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if m:
            stamps[int(m.group(2))] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return {s: stamps[s] - stamps[s - 1] for s in sorted(stamps) if s - 1 in stamps}


def measure_mode(mode: str, steps: int, interval: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "tinytitan.launcher.launch", *overrides(Path(tmp), steps, interval, mode)]
        proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SystemExit(f"{mode}: training failed ({proc.returncode}):\n{log[-3000:]}")
    blocking = [float(x) for x in SAVE_LINE.findall(log)]
    times = step_times(log)
    # A save at step k delays the log line of step k+1 (the save runs after step k's line).
    after_save = [t for s, t in times.items() if (s - 1) % interval == 0 and s - 1 < steps]
    plain = [t for s, t in times.items() if (s - 1) % interval != 0]
    return {
        "async_mode": mode,
        "interval_saves": len(blocking),
        "save_blocking_s": [round(b, 3) for b in blocking],
        "step_after_save_s": round(statistics.median(after_save), 3) if after_save else None,
        "plain_step_s": round(statistics.median(plain), 3) if plain else None,
    }


def measure_restart(steps: int, interval: int) -> dict:
    """Seconds from SIGKILL of rank 1 to the restarted ranks' first step."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp)
        cmd = [sys.executable, "-m", "tinytitan.launcher.launch", *overrides(dump, steps, interval, "disabled")]
        log_path = dump / "log.txt"
        with open(log_path, "w") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env={**env(), "MAX_RESTARTS": "1"}, stdout=out, stderr=out)
        while not (dump / "checkpoint" / f"step-{interval}" / ".metadata").exists():
            if proc.poll() is not None:
                raise SystemExit(f"training ended early:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        victim = rank_pid(proc.pid, 1)
        if victim is None:
            raise SystemExit("rank 1 not found")
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        proc.wait()
        log = log_path.read_text()
    resumed = [m for m in (STEP_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in log.splitlines()) if m]
    after = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() for m in resumed]
    first = min(t for t in after if t > killed_at)
    return {"restart_to_first_step_s": round(first - killed_at, 1), "exit_code": proc.returncode}


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of training rank ``rank`` started by launcher ``launcher`` (found by their environment)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tinytitan.rank.main" in cmdline and b"torch.distributed.run" not in cmdline:
            if f"RANK={rank}".encode() in environ and f"TINYTITAN_LAUNCHER_PID={launcher}".encode() in environ:
                return int(entry)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--interval", type=int, default=4)
    parser.add_argument("--modes", default="disabled,async", help="async_mode values, comma-separated")
    parser.add_argument("--restart", action="store_true", help="also measure a restart after a killed rank")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"modes": [measure_mode(m, args.steps, args.interval) for m in args.modes.split(",")]}
    if args.restart:
        results["restart"] = measure_restart(args.steps, args.interval)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results["modes"]:
        print(f"async_mode={r['async_mode']:<9} save blocks training {r['save_blocking_s']} s; "
              f"step after a save {r['step_after_save_s']} s vs {r['plain_step_s']} s otherwise")  # fmt: skip
    if args.restart:
        print(f"restart after a killed rank: {results['restart']['restart_to_first_step_s']} s from the kill to the "
              f"next step (exit code {results['restart']['exit_code']})")  # fmt: skip


if __name__ == "__main__":
    main()

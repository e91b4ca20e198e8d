#!/usr/bin/env python3
"""Wall time of the commands that need no torch: `tinytitan models`, `tinytitan checkpoint inspect`, and
rerunning a finished run (`tinytitan train` and `./run_llama_train.sh`'s entry), each in a fresh process.

    python benchmarks/cli_startup.py --run outputs/debug              # a finished run folder (with run.toml)
    python benchmarks/cli_startup.py --run outputs/debug --repeats 5

The run is only read: its rerun asks for the steps its record says it trained, so the launcher answers
"nothing to do" and writes nothing. Each line: the command, then the wall seconds of every repeat and
whether torch was imported (``-X importtime`` lists every module a process imports).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout without `pip install`


def timed(command: list[str], env: dict) -> tuple[float, bool]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=REPO, env=env, capture_output=True,
                          text=True)  # fmt: skip
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}")
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return wall, "torch" in imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder (its run.toml and checkpoints)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = args.run.resolve()
    from tinytitan.config import read_toml

    record = read_toml(run / "run.toml")
    steps = record["training"]["steps"]
    step = max(int(p.name.removeprefix("step-")) for p in (run / "checkpoint").glob("step-*"))
    rerun = ["--job.dump_folder", str(run), "--training.steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "CONFIG_FILE": str(run / "run.toml")}
    commands = {
        "tinytitan models": ["-m", "tinytitan.cli", "models"],
        f"tinytitan checkpoint inspect {run.name}/checkpoint/step-{step}": [
            "-m", "tinytitan.cli", "checkpoint", "inspect", str(run / "checkpoint" / f"step-{step}")],
        "tinytitan train (a finished run)": ["-m", "tinytitan.cli", "train", *rerun],
        "run_llama_train.sh's entry (a finished run)": ["-m", "tinytitan.launcher.launch", *rerun],
    }  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, command in commands.items():
        walls, torch = zip(*(timed(command, env) for _ in range(args.repeats)), strict=True)
        runs = ", ".join(f"{w:.2f}" for w in walls)
        print(f"{name}: median {statistics.median(walls):.2f} s ({runs}); torch imported: {any(torch)}")


if __name__ == "__main__":
    main()

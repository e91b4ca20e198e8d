"""Runs real multi-process CPU training for the tests (no mocks)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEBUG_CONFIG = REPO / "train_configs" / "llama3_debug.toml"
STAGES_CONFIG = REPO / "train_configs" / "llama3_debug_stages.toml"
N = 4  # checkpoint interval of the `uninterrupted` fixture, which trains 2N steps
STAGE_STEPS = 6  # steps of each of the two stages of the `stages_run` fixture (2 ranks x 4 x 256 tokens a step)


def small_run_overrides(dump_folder: Path, steps: int, interval: int, *, log_freq: int = 1) -> list[str]:
    """A few-step debug run: small batches, a checkpoint every `interval` steps."""
    return [
        "--job.dump_folder", str(dump_folder),
        "--training.steps", str(steps),
        "--training.local_batch_size", "4",
        "--checkpoint.interval", str(interval),
        "--checkpoint.keep_latest_k", "0",
        "--metrics.log_freq", str(log_freq),
        "--validation.no-enable",
        "--lr_scheduler.warmup_steps", "2",
    ]  # fmt: skip


def stages_run_overrides(dump_folder: Path, debug_run: Path) -> list[str]:
    """The two-stage debug recipe (``STAGES_CONFIG``) for 2 x STAGE_STEPS steps, continued from ``debug_run``'s
    last checkpoint (its weights only: a fresh optimizer, LR schedule and data stream)."""
    return [
        *small_run_overrides(dump_folder, steps=2 * STAGE_STEPS, interval=N),
        "--data.stages.0.until_tokens", str(STAGE_STEPS * 2 * 4 * 256),
        "--checkpoint.initial_load_path", str(Path(debug_run) / "checkpoint" / "step-20"),
    ]  # fmt: skip


def launch(
    overrides: list[str],
    *,
    config: Path = DEBUG_CONFIG,
    nproc: int = 2,
    timeout: int = 600,
    env: dict | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """``python -m tinytitan.launcher.launch`` (what run_llama_train.sh runs), from the repo root."""
    # Every rank's output, and Python's traceback of every thread if a rank dies of a signal.
    ranks = ",".join(str(r) for r in range(nproc))
    run_env = {**os.environ, "NGPU": str(nproc), "CONFIG_FILE": str(config), "LOG_RANK": ranks,
               "PYTHONFAULTHANDLER": "1", **(env or {})}  # fmt: skip
    command = [sys.executable, "-m", "tinytitan.launcher.launch", *overrides]
    proc = subprocess.run(command, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def read_metrics(dump_folder: Path) -> list[dict]:
    """Rows of metrics.jsonl that the training processes wrote (rank 0)."""
    path = Path(dump_folder) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_losses(dump_folder: Path) -> dict[int, float]:
    """step -> loss; a resumed run's later rows win over a killed run's."""
    return {row["step"]: row["loss"] for row in read_metrics(dump_folder) if "loss" in row}


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (relative path -> digest): proves a command changed nothing."""
    root = Path(root)
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def descendants(pid: int) -> list[int]:
    """All processes below pid (torchrun starts its workers in new sessions, so killpg misses them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def one_line(text: str) -> str:
    """The only non-blank line of ``text`` (no traceback): what a command says when it says one thing."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text[-3000:]
    return lines[0]


def one_line_error(proc) -> str:
    """A refused command (a ``subprocess.CompletedProcess``): exit code 2, no traceback anywhere, and one
    ``tinytitan: error: ...`` line on stderr, returned."""
    assert "Traceback" not in proc.stdout, proc.stdout[-3000:]
    return assert_one_line_refusal(proc.stderr, proc.returncode)


def refused_before_start(proc, dump: Path | None = None) -> str:
    """A launch refused before any process started: ``one_line_error`` (exit 2, one line, no traceback), torchrun
    never ran, and nothing was written (``dump``, the run folder, does not exist). Returns the line."""
    line = one_line_error(proc)
    assert "torch.distributed.run" not in proc.stdout, proc.stdout[-3000:]
    assert dump is None or not Path(dump).exists(), f"{dump} was written"
    return line


def assert_one_line_refusal(stderr: str, code: int | None = None, expected_code: int = 2) -> str:
    """The one ``tinytitan: error: ...`` line of a refusal (no traceback, nothing else on stderr); returns it."""
    if code is not None:
        assert code == expected_code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tinytitan: error: "), stderr[-3000:]
    return lines[0]

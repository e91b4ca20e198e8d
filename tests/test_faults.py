"""Faults during real CPU training through the launcher: a killed rank, a killed launcher,
preemption, a stopped (hung) rank, and an error every rank raises."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import DEBUG_CONFIG, REPO, N, descendants, launch, read_metrics, small_run_overrides, train_losses
from tinytitan.checkpoint.completeness import folder_problem, step_folders
from tinytitan.faults import PREEMPTED_EXIT_CODE


def start(overrides: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    run_env = {**os.environ, "NGPU": "2", "CONFIG_FILE": str(DEBUG_CONFIG), "LOG_RANK": "0,1", **(env or {})}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], cwd=REPO, env=run_env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def wait_until(proc: subprocess.Popen, done: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"training ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ranks(launcher: int) -> dict[int, int]:
    """rank -> pid of the training processes below the launcher."""
    found = {}
    for pid in descendants(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"tinytitan.rank.main" in cmdline and b"torch.distributed.run" not in cmdline:
            rank = [e for e in environ if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0].split(b"=")[1])] = pid
    return found


def steps_logged(dump: Path) -> int:
    try:
        return max((r["step"] for r in read_metrics(dump) if "loss" in r), default=0)
    except (OSError, ValueError):
        return 0


def test_a_killed_rank_is_restarted_and_the_run_matches_an_uninterrupted_one(uninterrupted, tmp_path):
    """The step-N checkpoint is written asynchronously (what gloo allows on CPU): the restart resumes from it."""
    overrides = [*small_run_overrides(tmp_path, steps=2 * N, interval=N), "--checkpoint.async_mode", "async"]
    proc = start(overrides, tmp_path / "log.txt", {"MAX_RESTARTS": "2"})
    wait_until(proc, lambda: (tmp_path / "checkpoint" / f"step-{N}" / ".metadata").exists(), "the checkpoint")
    victim = ranks(proc.pid)[1]
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0
    log = (tmp_path / "log.txt").read_text()
    assert f"tinytitan: rank 1 (pid {victim}) failed with signal SIGKILL" in log
    assert "restarting every rank from the newest complete checkpoint (restart 1 of 2)" in log
    assert f"Training starts at step {N + 1}" in log
    expected, resumed = train_losses(uninterrupted), train_losses(tmp_path)
    assert [resumed[s] for s in range(N + 1, 2 * N + 1)] == [expected[s] for s in range(N + 1, 2 * N + 1)]


def test_kill_9_of_the_launcher_ends_every_process_and_the_rerun_resumes_exactly(uninterrupted, tmp_path):
    """SIGKILL to the launcher alone: torchrun, the ranks and their loader workers die with it (nothing
    races the next launcher). The same command again resumes from the step-N checkpoint, bit for bit,
    and with a loader worker per rank the stream is the one the in-process loader gives `uninterrupted`."""
    overrides = [*small_run_overrides(tmp_path, steps=2 * N, interval=N), "--training.dataloader.num_workers", "1"]
    proc = start(overrides, tmp_path / "log.txt")
    wait_until(proc, lambda: (tmp_path / "checkpoint" / f"step-{N}" / ".metadata").exists(), "the checkpoint")
    below = descendants(proc.pid)
    assert len([p for p in below if b"spawn_main" in _cmdline(p)]) == 2, "one loader worker per rank"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while (
        alive := [p for p in below if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive == []
    assert not (tmp_path / "checkpoint" / f"step-{2 * N}" / ".metadata").exists()

    rerun = launch(overrides)
    assert f"Training starts at step {N + 1}" in rerun.stdout + rerun.stderr
    expected, resumed = train_losses(uninterrupted), train_losses(tmp_path)
    assert [resumed[s] for s in range(N + 1, 2 * N + 1)] == [expected[s] for s in range(N + 1, 2 * N + 1)]
    tokens = [
        [r["n_tokens_seen"] for r in read_metrics(d) if r["step"] == 2 * N][-1] for d in (tmp_path, uninterrupted)
    ]
    assert tokens[0] == tokens[1]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_sigterm_to_the_launcher_saves_the_step_reached_and_the_rerun_resumes_exactly(uninterrupted, tmp_path):
    overrides = small_run_overrides(tmp_path, steps=2 * N, interval=100)  # no interval checkpoint before the end
    proc = start(overrides, tmp_path / "log.txt")
    wait_until(proc, lambda: steps_logged(tmp_path) >= 2, "step 2")
    os.kill(proc.pid, signal.SIGTERM)  # the launcher's own pid, not its group
    assert proc.wait(timeout=300) == PREEMPTED_EXIT_CODE
    log = (tmp_path / "log.txt").read_text()
    saved = step_folders(tmp_path / "checkpoint")
    assert len(saved) == 1, saved
    step, folder = saved[0]
    assert 2 <= step < 2 * N and folder_problem(folder) is None
    assert f"tinytitan: preempted: checkpoint {folder} holds step {step}" in log
    assert "Traceback" not in log

    rerun = launch(overrides)
    assert f"Training starts at step {step + 1}" in rerun.stdout + rerun.stderr
    expected, resumed = train_losses(uninterrupted), train_losses(tmp_path)
    assert [resumed[s] for s in range(step + 1, 2 * N + 1)] == [expected[s] for s in range(step + 1, 2 * N + 1)]


def test_a_stopped_rank_times_out_is_named_and_the_restart_finishes_the_run(tmp_path):
    overrides = [*small_run_overrides(tmp_path, steps=6, interval=2), "--comm.train_timeout_seconds", "5"]
    proc = start(overrides, tmp_path / "log.txt", {"MAX_RESTARTS": "1"})
    wait_until(proc, lambda: (tmp_path / "checkpoint" / "step-2" / ".metadata").exists(), "the checkpoint")
    os.kill(ranks(proc.pid)[1], signal.SIGSTOP)
    assert proc.wait(timeout=300) == 0
    log = (tmp_path / "log.txt").read_text()
    assert "rank 1 was stopped (SIGSTOP?) after step" in log, log[-3000:]
    assert "(restart 1 of 1)" in log
    assert (tmp_path / "checkpoint" / "step-6" / ".metadata").exists()


def test_an_error_every_rank_raises_is_printed_once(uninterrupted, tmp_path):
    """A data stream that cannot resume (another data.seed) is known only inside the ranks, on loading."""
    import shutil

    dump = tmp_path / "run"
    shutil.copytree(uninterrupted, dump)
    overrides = [*small_run_overrides(dump, steps=2 * N + 2, interval=2 * N + 2), "--data.seed", "7"]
    proc = launch(overrides, check=False)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if "data.seed changed since the checkpoint" in line]
    assert len(errors) == 1 and errors[0].startswith("tinytitan: error: "), out[-3000:]
    assert "(1234 -> 7)" in errors[0] and "Traceback" not in out and "=====" not in out

"""Faults during real CPU training through the launcher: a killed rank, a killed launcher,
preemption, Ctrl-C, a stopped rank, a rank asleep (hung), and an error every rank raises."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import DEBUG_CONFIG, REPO, N, descendants, launch, read_metrics, small_run_overrides, train_losses
from tinytitan.checkpoint.completeness import folder_problem, newest_complete, step_folders
from tinytitan.run.faults import PREEMPTED_EXIT_CODE

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)


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
    """The step-N checkpoint is written asynchronously (what gloo allows on CPU): the restart resumes from it.
    Rank 1 is held in step N+1's data fetch (tests.hang_in_data, once) until it is killed, so that on a loaded
    machine the run cannot finish while the background save completes."""
    marker = tmp_path / "held"
    overrides = [*small_run_overrides(tmp_path, steps=2 * N, interval=N), "--checkpoint.async_mode", "async",
                 "--experimental.custom_import", "tests.hang_in_data"]  # fmt: skip
    proc = start(overrides, tmp_path / "log.txt", {"MAX_RESTARTS": "2", "TINYTITAN_TEST_HANG": f"1:{N + 1}:{marker}"})
    wait_until(proc, lambda: (tmp_path / "checkpoint" / f"step-{N}" / ".metadata").exists() and marker.exists(),
               "the checkpoint")  # fmt: skip
    victim = ranks(proc.pid)[1]
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0
    log = (tmp_path / "log.txt").read_text()
    assert f"tinytitan: rank 1 (pid {victim}) failed with signal SIGKILL" in log
    assert f"restarting every rank from the step-{N} checkpoint (restart 1 of 2)" in log
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
    """With hang detection off, the collective timeout ends the hang: the stopped rank is named,
    and its peer's timeout traceback is one line."""
    overrides = [*small_run_overrides(tmp_path, steps=6, interval=2), "--comm.train_timeout_seconds", "5",
                 "--hang.stall_seconds", "0"]  # fmt: skip
    proc = start(overrides, tmp_path / "log.txt", {"MAX_RESTARTS": "1"})
    wait_until(proc, lambda: (tmp_path / "checkpoint" / "step-2" / ".metadata").exists(), "the checkpoint")
    os.kill(ranks(proc.pid)[1], signal.SIGSTOP)
    assert proc.wait(timeout=300) == 0
    log = (tmp_path / "log.txt").read_text()
    assert "; rank 1 was stopped (SIGSTOP?) in step " in log, log[-3000:]
    assert "(restart 1 of 1)" in log
    assert (tmp_path / "checkpoint" / "step-6" / ".metadata").exists()
    assert "Traceback" not in log
    shortened = [line for line in log.splitlines() if line.startswith("[rank0]:[rank0]: ")]
    assert len(shortened) == 1 and "Timed out waiting" in shortened[0], shortened


def test_a_rank_asleep_is_named_with_its_stack_and_the_restart_finishes_the_run(tmp_path):
    """Rank 1 falls asleep fetching the batch of step 3: no rank moves for [hang] stall_seconds, so the
    launcher prints rank 1's stack and one line naming it, and restarts from the step-2 checkpoint. Rank 0
    waited inside a collective and is killed before its timeout: no traceback at all. (That the restart
    resumes exactly is tested through the same hang in tests/launcher/test_multinode.py.)"""
    hang = f"1:3:{tmp_path / 'hung-once'}"
    overrides = [*small_run_overrides(tmp_path / "run", steps=4, interval=2), "--comm.train_timeout_seconds",
                 "60", "--hang.stall_seconds", "10", "--experimental.custom_import", "tests.hang_in_data"]  # fmt: skip
    proc = launch(overrides, env={"MAX_RESTARTS": "1", "TINYTITAN_TEST_HANG": hang})
    out = proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tinytitan: rank")]
    assert len(lines) == 1, out[-4000:]
    assert re.fullmatch(
        r"tinytitan: rank 1 on host \S+ \(pid \d+\) made no progress for \d+ s in step 3 \(data\); "
        r"its stack is above; restarting every rank from the step-2 checkpoint \(restart 1 of 1\)",
        lines[0],
    ), lines[0]
    stack = proc.stderr[: proc.stderr.index(lines[0])].rsplit("Current thread", 1)[1]
    assert "in sleep_forever_in_data_loading" in stack and "in batch_generator" in stack
    assert "Traceback" not in out
    assert (tmp_path / "run" / "checkpoint" / "step-4" / ".metadata").exists()


def test_ctrl_c_stops_in_two_lines_and_names_the_step_to_resume_from(tmp_path):
    """SIGINT to the launcher's process group, as a terminal sends it, during training. Counted: every
    line the launcher writes (stderr and stdout, merged here: the ranks' output passes through it) after
    the signal, i.e. after what the log held just before it, rank lines in flight included; at most 5
    (the launcher's own are 2: "interrupted", then the resume hint, which ends the output)."""
    overrides = small_run_overrides(tmp_path, steps=100, interval=2)
    log = tmp_path / "log.txt"
    run_env = {**os.environ, "NGPU": "2", "CONFIG_FILE": str(DEBUG_CONFIG), "LOG_RANK": "0,1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], cwd=REPO,
                                env=run_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    # After both ranks logged the end of the step-2 save: its closing lines are not in flight at the signal
    # (on a loaded machine they came after .metadata and were counted).
    wait_until(proc, lambda: (tmp_path / "checkpoint" / "step-2" / ".metadata").exists()
               and log.read_text().count("Finished saving the checkpoint") >= 2, "the checkpoint")  # fmt: skip
    before = log.read_text()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 128 + signal.SIGINT
    text = log.read_text()
    assert text.startswith(before)
    after = text[len(before) :].splitlines()
    step, folder = newest_complete(tmp_path / "checkpoint")
    assert step >= 2
    assert "tinytitan: interrupted: stopping the ranks (Ctrl-C again to kill them)" in after, after
    assert (
        after[-1] == f"tinytitan: stopped (exit code 130); run the same command to resume from step {step} ({folder})"
    )
    assert len(after) <= 5, after
    launcher = [line for line in after if not line.startswith("[rank")]  # the rest: ranks' lines in flight
    assert launcher == ["tinytitan: interrupted: stopping the ranks (Ctrl-C again to kill them)", after[-1]], after
    assert "Traceback" not in text


def test_an_error_the_ranks_raise_is_one_line_printed_once(tmp_path):
    """Every rank raises the same TinytitanError mid-run (injected: no launcher check can see it): the
    launcher prints it once, as one line, exit 2, without torchrun's dump or a traceback."""
    overrides = [*small_run_overrides(tmp_path, steps=3, interval=10), "--experimental.custom_import",
                 "tests.raise_in_ranks"]  # fmt: skip
    proc = launch(overrides, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if "injected at step 2" in line]
    assert errors == ["tinytitan: error: injected at step 2 by tests.raise_in_ranks: remove the custom_import"], out[
        -3000:
    ]
    assert "Traceback" not in out and "ChildFailedError" not in out, out[-3000:]


def test_an_error_every_rank_would_raise_is_refused_once(uninterrupted, tmp_path):
    """A data stream that cannot resume (another data.seed): since issue 31 the launcher refuses it before
    torchrun (tinytitan.launcher.resume_check), with the ranks' own rule; still one line, printed once."""
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

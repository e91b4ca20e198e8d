"""End-to-end CPU training through the launcher: full-state checkpoints, exact resume after
SIGKILL, and recovery from a process killed while it was writing a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from torch.distributed.checkpoint import FileSystemReader

from tests.helpers import DEBUG_CONFIG, REPO, N, descendants, launch, read_metrics, small_run_overrides, train_losses


def kill_after_checkpoint(overrides: list[str], checkpoint: Path, timeout: float = 300) -> None:
    """Start training and SIGKILL the launcher, torchrun and every rank once `checkpoint` is complete."""
    env = {**os.environ, "NGPU": "2", "CONFIG_FILE": str(DEBUG_CONFIG)}
    proc = subprocess.Popen([sys.executable, "-m", "tinytitan.launch", *overrides], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not (checkpoint / ".metadata").exists():
            assert proc.poll() is None, "training ended before the checkpoint appeared"
            assert time.monotonic() < deadline, "timed out waiting for the checkpoint"
            time.sleep(0.02)
    finally:
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def test_every_checkpoint_holds_the_full_training_state(uninterrupted):
    for step in (N, 2 * N):  # the last checkpoint too (last_save_model_only = false)
        keys = set(
            FileSystemReader(str(uninterrupted / "checkpoint" / f"step-{step}")).read_metadata().state_dict_metadata
        )
        assert "tok_embeddings.weight" in keys and "output.weight" in keys
        for prefix in ("optimizer.", "lr_scheduler.", "dataloader.", "train_state.step", "train_state.ntokens_seen"):
            assert any(k.startswith(prefix) for k in keys), (step, prefix)


def test_loss_falls_on_the_embedded_sample(uninterrupted):
    losses = train_losses(uninterrupted)
    assert sorted(losses) == list(range(1, 2 * N + 1))
    assert losses[2 * N] < losses[1] - 0.5


def test_resume_after_sigkill_is_exact(uninterrupted, tmp_path):
    overrides = small_run_overrides(tmp_path, steps=2 * N, interval=N)
    kill_after_checkpoint(overrides, tmp_path / "checkpoint" / f"step-{N}")
    assert not (tmp_path / "checkpoint" / f"step-{2 * N}" / ".metadata").exists()
    proc = launch(overrides)  # the same command again
    assert f"Training starts at step {N + 1}" in proc.stdout + proc.stderr
    expected, resumed = train_losses(uninterrupted), train_losses(tmp_path)
    for step in range(N + 1, 2 * N + 1):
        assert resumed[step] == expected[step], (step, resumed[step], expected[step])
    rows = [r for r in read_metrics(tmp_path) if r["step"] == 2 * N]
    assert (
        rows[-1]["n_tokens_seen"] == [r for r in read_metrics(uninterrupted) if r["step"] == 2 * N][0]["n_tokens_seen"]
    )


def test_killed_during_save_resumes_from_last_complete_checkpoint(uninterrupted, tmp_path):
    overrides = small_run_overrides(tmp_path, steps=2 * N, interval=N)
    crash = launch([*overrides, "--experimental.custom_import", "tests.crash_in_save"],
                   env={"TINYTITAN_TEST_CRASH_IN_SAVE": f"step-{2 * N}"}, check=False)  # fmt: skip
    assert crash.returncode != 0
    partial = tmp_path / "checkpoint" / f"step-{2 * N}"
    assert any(partial.glob("*.distcp")) and not (partial / ".metadata").exists()  # a real partial folder

    proc = launch(overrides)  # no cleanup in between
    log = proc.stdout + proc.stderr
    assert f"Loading the checkpoint from {tmp_path}/checkpoint/step-{N}." in log
    assert f"Training starts at step {N + 1}" in log
    assert (partial / ".metadata").exists()
    expected, resumed = train_losses(uninterrupted), train_losses(tmp_path)
    assert [resumed[s] for s in range(N + 1, 2 * N + 1)] == [expected[s] for s in range(N + 1, 2 * N + 1)]

"""End-to-end CPU training through the launcher: full-state checkpoints, and recovery from a process
killed while it was writing a checkpoint. (Exact resume after SIGKILL: tests/launcher/test_faults.py.)"""

from __future__ import annotations

import pytest
from torch.distributed.checkpoint import FileSystemReader

from tests.helpers import N, launch, small_run_overrides, train_losses

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)


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

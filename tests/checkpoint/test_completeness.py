"""Checkpoints under faults: truncated files, partial folders and keep_latest_k, a full disk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import N, launch, small_run_overrides
from tinytitan.checkpoint.completeness import folder_problem, purge_checkpoints, step_folders
from tinytitan.checkpoint.inspect import inspect_checkpoint, list_steps

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)


def partial_copy(src: Path, dst: Path) -> Path:
    """What a save killed before .metadata leaves: the tensor files only."""
    dst.mkdir(parents=True)
    for f in src.glob("*.distcp"):
        shutil.copy(f, dst / f.name)
    return dst


def test_inspect_reports_a_truncated_distcp_and_lists_every_step(uninterrupted, tmp_path):
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(uninterrupted / "checkpoint" / f"step-{N}", ckpt / f"step-{N}")
    truncated = shutil.copytree(uninterrupted / "checkpoint" / f"step-{2 * N}", ckpt / f"step-{2 * N}")
    victim = sorted(truncated.glob("*.distcp"))[-1]
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    partial_copy(truncated, ckpt / "step-99")

    assert inspect_checkpoint(ckpt / f"step-{N}")["resumable"] is True
    info = inspect_checkpoint(truncated)
    assert info["resumable"] is False and info["complete"] is False
    assert f"{victim.name} is truncated" in info["problem"]
    rows = {r["step"]: r for r in list_steps(tmp_path)}
    assert [rows[s]["complete"] for s in (N, 2 * N, 99)] == [True, False, False]
    assert "no .metadata" in rows[99]["problem"]


def test_purge_keeps_the_last_complete_checkpoints_when_newer_folders_are_partial(uninterrupted, tmp_path):
    """torchtitan 0.2.2 would keep only step-100 and step-200 here: it counts every step-N folder."""
    ckpt = tmp_path / "checkpoint"
    for name in ("step-1", f"step-{N}"):
        shutil.copytree(uninterrupted / "checkpoint" / f"step-{N}", ckpt / name)
    for name in ("step-100", "step-200"):
        partial_copy(uninterrupted / "checkpoint" / f"step-{N}", ckpt / name)
    truncated = shutil.copytree(uninterrupted / "checkpoint" / f"step-{N}", ckpt / f"step-{N + 2}")
    victim = sorted(truncated.glob("*.distcp"))[0]
    with open(victim, "r+b") as f:
        f.truncate(100)
    overrides = [*small_run_overrides(tmp_path, steps=2 * N, interval=N), "--checkpoint.keep_latest_k", "2"]
    proc = launch(overrides)
    log = proc.stdout + proc.stderr
    assert f"Skipping checkpoint {truncated}: {victim.name} is truncated" in log  # torchtitan would load it
    assert f"Training starts at step {N + 1}" in log
    left = {step: folder_problem(path) is None for step, path in step_folders(ckpt)}
    # only the oldest complete one went; partial and truncated folders are never counted
    assert left == {N: True, N + 2: False, 2 * N: True, 100: False, 200: False}


def test_purge_deletes_older_complete_and_partial_folders_only(uninterrupted, tmp_path):
    source = uninterrupted / "checkpoint" / f"step-{N}"
    for step, complete in ((1, True), (2, False), (3, True), (4, True), (5, False)):
        if complete:
            shutil.copytree(source, tmp_path / f"step-{step}")
        else:
            partial_copy(source, tmp_path / f"step-{step}")
    deleted = purge_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in deleted) == ["step-1", "step-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-3", "step-4", "step-5"]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(uninterrupted, small_disk):
    """100 MiB holds one 62 MiB checkpoint of the debug run but not two."""
    previous = shutil.copytree(uninterrupted / "checkpoint" / f"step-{N}", small_disk / "checkpoint" / f"step-{N}")
    before = {f.name: f.read_bytes() for f in previous.iterdir()}
    proc = launch(small_run_overrides(small_disk, steps=2 * N, interval=N), check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tinytitan: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert f"no space left in {small_disk / 'checkpoint'}" in errors[0] and "needs at least" in errors[0]
    assert f"step-{N}, is intact" in errors[0]
    assert {f.name: f.read_bytes() for f in previous.iterdir()} == before
    info = inspect_checkpoint(previous)
    assert info["complete"] and info["resumable"], json.dumps(info)

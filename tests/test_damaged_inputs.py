"""Damaged inputs and full or read-only disks, through the CLI: one line, exit 2, nothing changed.

Each case copies a real checkpoint or export, damages the copy as a user's disk would (a truncated
copy, a lost config field), runs the command, and checks the sha256 of every file afterwards.
Full and read-only disks are real tmpfs mounts (root only; skipped, saying why, elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEBUG_CONFIG, one_line_error, tree_digest


def tinytitan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tinytitan.cli", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture(scope="module")
def truncated_step(debug_run, tmp_path_factory) -> Path:
    step = tmp_path_factory.mktemp("truncated") / "checkpoint" / "step-20"
    shutil.copytree(debug_run / "checkpoint" / "step-20", step)
    victim = sorted(step.glob("*.distcp"))[0]
    os.truncate(victim, victim.stat().st_size // 3)
    return step


@pytest.mark.parametrize(
    "command",
    [
        ["export", "{step}", "--out", "{out}", "--config", DEBUG_CONFIG],
        ["eval", "loss", "--checkpoint", "{step}", "--config", DEBUG_CONFIG],
        ["generate", "--checkpoint", "{step}", "--config", DEBUG_CONFIG, "--prompt", "hi"],
    ],
    ids=["export", "eval", "generate"],
)
def test_a_truncated_distcp_is_named(truncated_step, tmp_path, command):
    before = tree_digest(truncated_step)
    out = tmp_path / "out"
    proc = tinytitan(*(str(c).format(step=truncated_step, out=out) for c in command))
    line = one_line_error(proc)
    assert "is incomplete: __0_0.distcp is truncated (" in line and "copy it again or use an earlier step" in line
    assert tree_digest(truncated_step) == before and not out.exists()


def test_inspect_reports_a_truncated_checkpoint_as_not_resumable(truncated_step):
    proc = tinytitan("checkpoint", "inspect", truncated_step, "--json")
    info = json.loads(proc.stdout)
    assert proc.returncode == 0 and info["complete"] is False and info["resumable"] is False
    assert info["problem"].startswith("__0_0.distcp is truncated")


@pytest.fixture
def damaged_export(debug_export, tmp_path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(debug_export, copy)
    return copy


def test_a_truncated_safetensors_is_named_by_generate_and_push(damaged_export):
    weights = damaged_export / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    before = tree_digest(damaged_export)
    for command in (["generate", "--model", damaged_export, "--prompt", "hi"],
                    ["push", damaged_export, "--repo-id", "org/x", "--dry-run"]):  # fmt: skip
        line = one_line_error(tinytitan(*command))
        assert "model.safetensors has" in line and "bytes its header describes" in line
    assert tree_digest(damaged_export) == before


def test_generate_refuses_an_export_that_lost_its_rope_scaling(damaged_export):
    config = json.loads((damaged_export / "config.json").read_text())
    del config["rope_parameters"], config["rope_scaling"]
    (damaged_export / "config.json").write_text(json.dumps(config))
    before = tree_digest(damaged_export)
    line = one_line_error(tinytitan("generate", "--model", damaged_export, "--prompt", "hi"))
    assert "config.json has RoPE" in line and "re-export" in line
    assert tree_digest(damaged_export) == before


def test_export_to_a_full_disk_is_refused_before_writing(debug_run, tmp_path):
    step = debug_run / "checkpoint" / "step-20"
    before = tree_digest(step)
    with tmpfs(tmp_path / "small", "4m") as small:
        line = one_line_error(tinytitan("export", step, "--out", small / "hf", "--config", DEBUG_CONFIG))
        assert f"--out {small / 'hf'}: the hf export needs 21.0 MiB but that disk has" in line
        assert list(small.iterdir()) == []
    assert tree_digest(step) == before


def test_a_disk_that_fills_during_export_is_named_and_cleaned(debug_run, tmp_path, monkeypatch):
    """Another process takes the space after the check: the write fails, the temp folder goes."""
    from tinytitan.errors import TinytitanError
    from tinytitan.export import pipeline

    monkeypatch.setattr(pipeline, "check_free_space", lambda *a, **k: None)  # as if the space went afterwards
    with tmpfs(tmp_path / "small", "4m") as small:
        with pytest.raises(
            TinytitanError, match=r"the disk of .*hf filled up while writing the hf export .*needs 21.0 MiB"
        ):
            pipeline.export(debug_run / "checkpoint" / "step-20", small / "hf", config=DEBUG_CONFIG, log=lambda _: None)
        assert list(small.iterdir()) == []


def test_export_to_a_read_only_disk_is_one_line(debug_run, tmp_path):
    with tmpfs(tmp_path / "ro", "64m", read_only=True) as ro:
        line = one_line_error(tinytitan("export", debug_run / "checkpoint" / "step-20", "--out", ro / "hf",
                                        "--config", DEBUG_CONFIG))  # fmt: skip
    assert "Read-only file system; that file system is read-only: write to a writable folder" in line

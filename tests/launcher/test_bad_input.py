"""Bad input, third round (issue 22), through the launcher as a user runs it.

Each refusal: exit code 2, one line ``tinytitan: error: ...`` naming the thing and the fix, no
traceback, nothing started, and the sha256 of every input and pre-existing output unchanged.
The cheap refusals call the launcher's own entry in this process (they end before torchrun);
one training checks the run lock and the finished-run rerun in real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import DEBUG_CONFIG, REPO, launch, one_line, small_run_overrides, tree_digest
from tinytitan.config import load_job_config
from tinytitan.errors import run_guarded
from tinytitan.launcher import launch as launcher
from tinytitan.launcher.run_folder import resume_step

TOML = DEBUG_CONFIG.read_text()


@pytest.fixture
def workspace(tmp_path):
    """A config copy, an lm-eval task folder with a broken YAML, and a run folder with an earlier output."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 8.0}\n')
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "broken.yaml").write_text("task: broken_task\ndataset_path: json\n  bad: [unclosed\n")
    return tmp_path


def _paths(folder: Path) -> list[str]:
    """Every file and folder below ``folder``: a new empty folder shows here, not in the digest."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def edited_config(folder: Path, old: str, new: str) -> Path:
    assert old in TOML
    path = folder / "job.toml"
    path.write_bytes(TOML.replace(old, new, 1).encode("latin-1" if "é" in new else "utf-8"))
    return path


CASES = [
    # 4: wrong overrides, each named alone with its right form
    ([], ["--validation.enable", "false"], "--validation.enable is a switch and takes no value: write "
     "--validation.no-enable alone to turn it off (--validation.enable turns it on)"),
    ([], ["--training.stepz", "2"], "unknown override --training.stepz: did you mean --training.steps?"),
    ([], ["--training.steps"], "--training.steps needs a value (an integer), e.g. --training.steps 10"),
    ([], ["--training.steps", "--validation.no-enable"], "--training.steps needs a value (an integer), e.g. "
     "--training.steps 10"),
    # 5: values that crashed every rank
    (["weight = 0.7", "weight = inf"], [], "data source 'slimpajama': weight = inf is not a finite number: fix it in "
     "the config file or the --data.sources.0.weight override"),
    (["steps = 300", 'steps = "2"'], [], "[training] steps = '2' is a string, but it must be an integer: fix it in "
     "the config file or the --training.steps override"),
    (["lr = 3e-3", "lr = -3e-3"], [], "[optimizer] lr = -0.003: the learning rate must be > 0"),
    # 6: wrong types in [data] that crashed the launcher
    (["validation_docs = 16", 'validation_docs = "16"'], [], "data source 'starcoderdata': validation_docs = '16' "
     "is a string, but it must be an integer: fix it in the config file or the --data.sources.1.validation_docs "
     "override"),
    (['text_field = "content"', "text_field = 5"], [], "data source 'starcoderdata': text_field = 5 is an integer, "
     "but it must be a string (in quotes): fix it in the config file or the --data.sources.1.text_field override"),
    # 7: a config file that is not UTF-8
    (["tinytitan debug model", "tinytitan débug model"], [], "config file {workspace}/job.toml is not UTF-8 text "
     "(byte 0xe9 on line 7): save it as UTF-8 (TOML files must be UTF-8)"),
    # 8: no step to train
    ([], ["--training.steps", "0"], "[training] steps = 0: train at least 1 step"),
    # 11: a local lm-eval task whose YAML does not parse
    ([], ["--eval.tasks", "broken_task", "--eval.include_path", "{workspace}/tasks", "--eval.freq", "1"],
     "lm-eval task file {workspace}/tasks/broken.yaml does not parse (line 3: mapping values are not allowed "
     "here), so lm-eval skips it and does not know broken_task: fix the YAML"),
]  # fmt: skip


@pytest.mark.parametrize("edit, overrides, expected", CASES, ids=[c[2][:40] for c in CASES])
def test_refused_before_any_process_starts(workspace, capsys, edit, overrides, expected):
    config = edited_config(workspace, *edit) if edit else DEBUG_CONFIG
    before, paths = tree_digest(workspace), _paths(workspace)
    args = ["--job.dump_folder", str(workspace / "run"), *(o.format(workspace=workspace) for o in overrides)]
    env = {**os.environ, "NGPU": "2", "LOG_RANK": "0"}
    code = run_guarded(lambda: launcher.launch(str(config), args, env))
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert one_line(err) == f"tinytitan: error: {expected.format(workspace=workspace)}"
    assert tree_digest(workspace) == before and _paths(workspace) == paths  # no lock, no folder made


# ---------------------------------------------------------------- 3 and 9: one training per folder, a finished run


def test_a_second_training_on_the_folder_is_refused_and_a_finished_run_is_left_alone(tmp_path, capsys):
    run = tmp_path / "run"
    overrides = small_run_overrides(run, steps=2, interval=2)
    env = {**os.environ, "NGPU": "2", "CONFIG_FILE": str(DEBUG_CONFIG), "LOG_RANK": "0,1"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], cwd=REPO, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        lock = run / ".tinytitan" / "lock"
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "the first launcher never took the lock"
            time.sleep(0.2)
        assert json.loads(lock.read_text())["pid"] == first.pid
        # Paused, the first launcher keeps its lock however slowly the second one starts on a loaded machine.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = launch(small_run_overrides(run, steps=3, interval=2), check=False, timeout=300)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 2 and second.stdout == ""
        line = one_line(second.stderr)
        assert line.startswith(f"tinytitan: error: run folder {run} is in use by another training (launcher pid "
                               f"{first.pid} on host {socket.gethostname()}, since ")  # fmt: skip
        assert line.endswith("wait for it to end or stop it, or set --job.dump_folder to another folder")
        assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()
    finally:
        if first.poll() is None:
            first.kill()
    assert (run / "checkpoint" / "step-2" / ".metadata").exists()

    # The finished run rerun, and a run asked for fewer steps than it has: one line, exit 0, nothing written.
    # (This check ends before torchrun, so the launcher's entry runs here, in this process.)
    before, paths = tree_digest(run), _paths(run)
    for steps in (2, 1):
        again = small_run_overrides(run, steps, 2)
        code = run_guarded(lambda: launcher.launch(str(DEBUG_CONFIG), again, env))  # noqa: B023 - called at once
        out, err = capsys.readouterr()
        assert code == 0 and err == ""
        assert one_line(out) == (f"tinytitan: run at step 2 >= training.steps {steps} ({run}/checkpoint/step-2): "
                                 "nothing to do; raise --training.steps to continue")  # fmt: skip
    assert tree_digest(run) == before and _paths(run) == paths  # no new tb/<time>/ folder either

    # What counts as "the step reached": the run's own complete checkpoint, as torchtitan resumes.
    def step_of(folder: Path, *extra: str):
        return resume_step(load_job_config(DEBUG_CONFIG, [*small_run_overrides(folder, 2, 2), *extra]))

    assert step_of(run) == 2
    assert step_of(run, "--checkpoint.no-enable") is None  # nothing is loaded
    assert step_of(run, "--checkpoint.load_step", "1") is None  # no step-1 folder
    fresh = tmp_path / "continued"  # continued pretraining: a new run folder, loading another run's checkpoint
    assert step_of(fresh, "--checkpoint.initial_load_path", str(run / "checkpoint" / "step-2")) is None
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    victim = sorted((damaged / "checkpoint" / "step-2").glob("*.distcp"))[0]
    os.truncate(victim, victim.stat().st_size // 2)
    assert step_of(damaged) is None  # its only checkpoint is incomplete: the run starts afresh


# ---------------------------------------------------------------- 12: data prepare onto a full disk


def test_data_prepare_onto_a_full_disk_names_the_folder_and_the_size_and_leaves_no_tmp(tmp_path):
    from tests.test_damaged_inputs import tmpfs

    sample = REPO / "tinytitan" / "assets" / "sample"
    before = tree_digest(sample)
    with tmpfs(tmp_path / "small", "256k") as small:
        (small / "notes.txt").write_text("an earlier output\n")
        command = [sys.executable, "-m", "tinytitan.cli", "data", "prepare", "--config", str(DEBUG_CONFIG),
                   "--out", str(small / "shards"), "--no-progress", "--workers", "2"]  # fmt: skip
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stdout == ""
        line = one_line(proc.stderr)
        assert line.startswith(f"tinytitan: error: no space left in {small / 'shards'} (No space left on device): "
                               "the token shards need about ")  # fmt: skip
        assert " MiB in all (" in line and "free space or choose another --out" in line
        assert not [p for p in small.rglob("*") if ".tmp" in p.name]
        assert (small / "notes.txt").read_text() == "an earlier output\n"
    assert tree_digest(sample) == before


def test_the_run_lock_names_its_holder_and_dies_with_it(tmp_path):
    from tinytitan.errors import TinytitanError
    from tinytitan.launcher.run_folder import RunLock, takes_lock
    from tinytitan.run.folder import RunFolder

    assert takes_lock({}) and takes_lock({"NNODES": "1"}) and takes_lock({"NNODES": "4", "NODE_RANK": "0"})
    assert not takes_lock({"NNODES": "4", "NODE_RANK": "1"}) and not takes_lock({"NNODES": "4"})  # who is node 0?
    with RunLock(RunFolder.at(tmp_path / "run")):
        held = rf"^run folder {tmp_path / 'run'} is in use by another training \(launcher pid {os.getpid()} on host "
        with pytest.raises(TinytitanError, match=held + rf"{socket.gethostname()}, since "):
            RunLock(RunFolder.at(tmp_path / "run")).acquire()
    with RunLock(RunFolder.at(tmp_path / "run")):  # freed on exit
        pass
    # A holder killed with SIGKILL (a lost node, a requeued job) frees it too: flock belongs to the open file.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from tinytitan.launcher.run_folder import "
                               "RunLock; from tinytitan.run.folder import RunFolder; RunLock(RunFolder.at(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(600)",
                               str(tmp_path / "run")], cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(TinytitanError, match=rf"\(launcher pid {holder.pid} on host "):
            RunLock(RunFolder.at(tmp_path / "run")).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(RunFolder.at(tmp_path / "run")):
        pass

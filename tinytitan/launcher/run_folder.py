"""What the launcher settles about the run folder (``--job.dump_folder``) before any process starts.

- **A finished run** (``finished_run``): when the newest complete checkpoint the ranks would
  resume from already holds step N >= ``training.steps`` M, torchtitan would log "Training
  starts at step N+1", write an empty ``tb/<time>/`` folder and stop. The launcher says so in
  one line and exits 0 instead, having written nothing (``tinytitan.launcher.finished`` answers first,
  without importing torch, where it can).
- **One training per folder** (``RunLock``): two launchers on one folder both trained and
  interleaved their ``step-N`` folders and ``metrics.jsonl``. The launcher holds an exclusive
  ``flock`` on ``<dump_folder>/.tinytitan/lock`` for the whole run and writes its pid and host
  inside; a second launcher refuses in one line naming them. ``flock`` belongs to the open
  file, so a launcher that dies (``kill -9``, a node lost) frees it at once, and a requeued
  SLURM job takes it again. Of a multi-node job only node 0 (``NODE_RANK=0``) takes it: the
  nodes of one job share the folder by design.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from tinytitan.checkpoint.completeness import newest_complete
from tinytitan.errors import TinytitanError
from tinytitan.run.folder import RunFolder


def resume_step(job_config) -> int | None:
    """The step a training of ``job_config`` resumes from, or None when it starts afresh.

    As torchtitan and ``TinyTrainer`` decide it: only a checkpoint in the run's own folder
    counts (``initial_load_path`` is read only when that folder holds none: a new run),
    ``load_step`` names the step, else the newest folder that is complete.
    """
    ckpt = job_config.checkpoint
    if not ckpt.enable:
        return None
    run = RunFolder.of(job_config)
    if ckpt.load_step >= 0:
        return ckpt.load_step if run.step(ckpt.load_step).is_dir() else None
    newest = newest_complete(run.checkpoints)
    return newest[0] if newest is not None else None


def finished_run(job_config) -> str | None:
    """The line to print when the run already reached ``training.steps`` (nothing to train), else None."""
    step, steps = resume_step(job_config), job_config.training.steps
    if step is None or step < steps:
        return None
    return finished_line(step, steps, RunFolder.of(job_config).step(step))


def finished_line(step: int, steps: int, where: Path) -> str:
    """What a finished run's rerun prints (also ``tinytitan.launcher.finished``, before torch is imported)."""
    return (
        f"tinytitan: run at step {step} >= training.steps {steps} ({where}): nothing to do; "
        f"raise --training.steps to continue"
    )


def takes_lock(env: Mapping[str, str]) -> bool:
    """Node 0 of a job (or the only node) holds the run folder for all its nodes.

    Without ``NODE_RANK`` a multi-node launcher cannot tell whether it is node 0 (torchrun then
    numbers the nodes at rendezvous), so none of them takes the lock rather than all but one refusing.
    """
    node_rank = (env.get("NODE_RANK") or "").strip()
    if node_rank:
        return node_rank == "0"
    return int(env.get("NNODES") or 1) <= 1


def make_run_folder(folder: Path) -> None:
    """``folder`` (inside the run folder) and its parents; one line when the run folder cannot be made there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        existing = next((p for p in folder.parents if p.exists()), None)
        where = f" in {existing}" if existing is not None else ""
        raise TinytitanError(
            f"--job.dump_folder {folder} cannot be created{where} ({e.strerror or e}): "
            "choose a folder on a writable disk"
        ) from None


class RunLock:
    """An exclusive hold on a run folder for as long as this process keeps it (``with RunLock(folder):``)."""

    def __init__(self, run: RunFolder):
        self.folder = run.root
        self.path = run.lock
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        make_run_folder(self.folder)
        self.path.parent.mkdir(exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by torchrun (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise TinytitanError(
                f"run folder {self.folder} is in use by another training ({holder}): wait for it to end or stop "
                "it, or set --job.dump_folder to another folder"
            ) from None
        except OSError:
            os.close(fd)
            raise
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Frees the folder (the file stays: removing it would race with a launcher that just opened it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return f"launcher pid {holder['pid']} on host {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a launcher that has not written its pid yet"

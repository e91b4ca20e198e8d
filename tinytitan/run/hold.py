"""Readers hold a checkpoint against the purge of the training that runs in its folder.

``export``, ``eval``, ``generate`` and ``checkpoint inspect`` may read ``step-N`` while a training
goes on in that run, and its ``keep_latest_k`` purge (rank 0, after each save) deleted the folder
during the reader's start-up. A reader takes a shared ``flock`` on ``<run>/.tinytitan/holds/step-N``
(``RunFolder.hold``) for as long as its process lives; the purge takes ``LOCK_EX | LOCK_NB`` on the
same file before deleting and, when a reader holds it, leaves the folder for the next purge.

``flock`` belongs to the open file, so a reader that dies frees its hold at once. Only run folders
the launcher made (with a ``.tinytitan`` folder) get holds; elsewhere (an export's copy, a
read-only disk) a reader reads without one, as before.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from tinytitan.run.folder import RunFolder, step_of

_HELD: list[int] = []  # this process's holds: open until it exits


def hold_checkpoint(step_folder: str | os.PathLike) -> bool:
    """Holds ``step_folder`` against the purge until this process exits; False where no hold is possible."""
    found = RunFolder.of_step(step_folder)
    if found is None:
        return False
    run, n = found
    if not run.state.is_dir():
        return False
    try:
        run.holds.mkdir(exist_ok=True)
        fd = os.open(run.hold(n), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only run folder: nothing purges it either
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a purge is deleting this step
    except OSError:
        os.close(fd)
        return False
    _HELD.append(fd)
    return True


def release_holds() -> None:
    """Frees this process's holds (they end with it anyway)."""
    while _HELD:
        os.close(_HELD.pop())


def remove_unless_held(step_folder: str | os.PathLike) -> bool:
    """Deletes ``step_folder`` unless a reader holds it; True when it was deleted."""
    step_folder = Path(step_folder)
    found = RunFolder.of_step(step_folder)
    hold = found[0].hold(found[1]) if found is not None else None
    if hold is None or not hold.exists():
        shutil.rmtree(step_folder, ignore_errors=True)
        return True
    try:
        fd = os.open(hold, os.O_RDWR)
    except OSError:
        shutil.rmtree(step_folder, ignore_errors=True)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a reader holds it: the next purge tries again
        os.close(fd)
        return False
    try:
        shutil.rmtree(step_folder, ignore_errors=True)
        hold.unlink(missing_ok=True)  # a reader waiting on it finds the step gone
    finally:
        os.close(fd)
    return True


def training_running(run: RunFolder) -> bool:
    """Whether a launcher holds the run folder's lock (a training runs there now)."""
    if not run.lock.is_file():
        return False
    try:
        fd = os.open(run.lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def missing_checkpoint(path: str | os.PathLike) -> str:
    """The line for a checkpoint folder that does not exist: the steps its run has, and whether the
    training running there removed it."""
    path = Path(path)
    line = f"checkpoint {path} does not exist"
    found = RunFolder.of_step(path)
    if found is not None and found[0].checkpoints.is_dir():
        run, n = found
        steps = sorted(
            s for p in run.checkpoints.iterdir() if (s := step_of(p)) is not None and (p / ".metadata").is_file()
        )
        if training_running(run) and any(s > n for s in steps):
            line += (
                f": the training running in {run.root} removed it (checkpoint.keep_latest_k keeps only the newest); "
                f"pass a step it keeps ({', '.join(map(str, steps))})"
            )
            return line
        if steps:
            return line + f": pass one of its run's steps ({', '.join(map(str, steps))}), e.g. {run.step(steps[-1])}"
    return line + ": pass a step folder such as outputs/debug/checkpoint/step-20"

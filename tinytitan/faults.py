"""What the launcher and its training ranks tell each other about faults, through files.

The launcher makes a private notes folder and names it in ``TINYTITAN_NOTES``. Each
rank writes there its pid and progress (so a restart or a hang can name the rank),
its ``TinytitanError`` (so the launcher prints one line instead of every rank's
traceback) and, after a preemption checkpoint, the step it saved. Files, not pipes:
they survive a rank that dies of SIGKILL and need no extra connection across nodes.

Nothing here imports the rest of tinytitan, so both sides can use it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path

NOTES_ENV = "TINYTITAN_NOTES"
LAUNCHER_ENV = "TINYTITAN_LAUNCHER_PID"
PREEMPTED_EXIT_CODE = 75  # sysexits' EX_TEMPFAIL: "try again later", i.e. requeue me
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PREEMPT_REQUEST = "preempt-requested"
DUPLICATE_WINDOW_S = 2.0  # signals closer than this to the first are copies of it, not a second request
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, grandparent: int | None = None) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (prctl PR_SET_PDEATHSIG).

    torch elastic starts ranks in sessions of their own, so a killed launcher would
    otherwise leave them training, and racing the next launcher for the checkpoint.
    If the parent is gone already (or, given `grandparent`, the parent's parent is not
    that process any more), the request came too late: die now.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    parent = os.getppid()
    if parent == 1 or (grandparent is not None and _parent_of(parent) != grandparent):
        os.kill(os.getpid(), sig)


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def rank_dies_with_torchrun() -> None:
    """For a training rank: die with torchrun, and die now if the launcher that started torchrun is gone."""
    launcher = os.environ.get(LAUNCHER_ENV)
    die_with_parent(signal.SIGKILL, int(launcher) if launcher and launcher.isdigit() else None)


def notes_dir() -> Path | None:
    raw = os.environ.get(NOTES_ENV)
    return Path(raw) if raw else None


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_note(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def note_rank(rank: int, step: int) -> None:
    """This rank is alive and finished `step` (0 before the first step)."""
    folder = notes_dir()
    if folder is not None:
        _write(folder / f"rank-{rank}.json", {"rank": rank, "pid": os.getpid(), "step": step, "time": time.time()})


def note_error(rank: int, message: str) -> None:
    folder = notes_dir()
    if folder is not None:
        _write(folder / f"error-{rank}.json", {"rank": rank, "message": message})


def note_preempted(rank: int, step: int, checkpoint: str) -> None:
    folder = notes_dir()
    if folder is not None:
        _write(folder / f"preempted-{rank}.json", {"rank": rank, "step": step, "checkpoint": checkpoint})


def preempt_was_requested() -> bool:
    """True when the launcher asked for a preemption checkpoint (it writes this before signalling)."""
    folder = notes_dir()
    return folder is not None and (folder / PREEMPT_REQUEST).exists()


def read_notes(folder: Path, kind: str) -> list[dict]:
    """All notes of one kind ("rank", "error", "preempted"), by rank."""
    notes = [read_note(p) for p in sorted(folder.glob(f"{kind}-*.json"))]
    return sorted((n for n in notes if n), key=lambda n: n["rank"])

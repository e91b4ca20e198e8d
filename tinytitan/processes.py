"""Processes of a run, as the launcher, the ranks and the data loader workers see each other: a child that dies
with its parent (Linux ``prctl(PR_SET_PDEATHSIG)``: torchrun's ranks, the launcher's torchrun and the loader
workers, so that no process trains on after the one that started it), an exit status and a process state in
words, and the failure whose message says all (``RankFailure``). Nothing here imports the rest of tinytitan."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
WORKER_PREFIX = "tt-data-"  # a data loader worker's process name (15 bytes at most): tt-data-RANK-K


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


def describe_exit(code: int | None) -> str:
    """A process's exit status in words: ``exit code 1``, ``signal SIGKILL``."""
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def process_state(pid: int) -> str | None:
    """The state letter of a process in /proc (R, S, T: stopped, Z: zombie), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def set_process_name(name: str) -> None:
    """This process's name in ``/proc/PID/comm`` (``ps``, and the launcher's hang line), 15 bytes at most."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def stopped_workers(pid: int) -> list[str]:
    """``data loader worker tinytitan-data-1-0 (pid 4242)`` for each data loader worker of process ``pid``
    that is stopped (state T: SIGSTOP): the rank then waits for it, and its own stack shows only the wait."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.find("(") + 1 : stat.rfind(")")], stat.rsplit(")", 1)[1].split()
        if rest[0] == "T" and rest[1] == str(pid) and name.startswith(WORKER_PREFIX):
            found.append(f"data loader worker tinytitan-data-{name[len(WORKER_PREFIX) :]} (pid {entry})")
    return sorted(found)


class RankFailure(RuntimeError):
    """A failure whose message says all (a data loader worker died): the rank exits 1 without a traceback,
    the launcher names the cause in its failure line, and a restart (if any is left) resumes."""

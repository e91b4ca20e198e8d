"""What the launcher and its training ranks tell each other about faults, through files.

The launcher makes a private notes folder and names it in ``TINYTITAN_NOTES``. Each
rank writes there its pid (so a restart or a hang can name the rank and signal it),
its ``TinytitanError`` (so the launcher prints one line instead of every rank's
traceback), after a preemption checkpoint the step it saved, and, when the launcher
asks, the Python stacks of its threads. Files, not pipes: they survive a rank that
dies of SIGKILL and need no extra connection.

Progress is told through the run folder instead, which every node sees (DCP
checkpoints need a shared filesystem): each rank's ``Heartbeat`` says where it is in
which step, so that each node's launcher can name a rank that stopped making progress.

Each kind of note is a frozen dataclass, read back typed. Nothing here imports the rest
of tinytitan but ``processes``, so both sides can use it.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from tinytitan.processes import RankFailure, die_with_parent

NOTES_ENV = "TINYTITAN_NOTES"
LAUNCHER_ENV = "TINYTITAN_LAUNCHER_PID"
PREEMPTED_EXIT_CODE = 75  # sysexits' EX_TEMPFAIL: "try again later", i.e. requeue me
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# Dumps every thread's Python stack (faulthandler). torchrun handles SIGINT, SIGHUP and SIGQUIT
# itself and forwards them, SIGTERM and SIGUSR1 mean preemption here: SIGUSR2 is the one left.
STACK_SIGNAL = signal.SIGUSR2
PREEMPT_REQUEST = "preempt-requested"
DUPLICATE_WINDOW_S = 2.0  # signals closer than this to the first are copies of it, not a second request


def rank_dies_with_torchrun() -> None:
    """For a training rank: die with torchrun, and die now if the launcher that started torchrun is gone."""
    launcher = os.environ.get(LAUNCHER_ENV)
    die_with_parent(signal.SIGKILL, int(launcher) if launcher and launcher.isdigit() else None)


def notes_dir() -> Path | None:
    raw = os.environ.get(NOTES_ENV)
    return Path(raw) if raw else None


# ---- the notes, typed ----
@dataclass(frozen=True)
class RankNote:
    """This process is training rank `rank` (written at its start)."""

    KIND: ClassVar[str] = "rank"
    rank: int
    pid: int


@dataclass(frozen=True)
class ErrorNote:
    """The rank failed with a ``TinytitanError``: bad input, the same after any restart."""

    KIND: ClassVar[str] = "error"
    rank: int
    message: str


@dataclass(frozen=True)
class CrashNote:
    """The rank failed with another exception: its type and message, which the launcher's failure line names."""

    KIND: ClassVar[str] = "crash"
    rank: int
    message: str


@dataclass(frozen=True)
class PreemptedNote:
    """The rank finished the preemption checkpoint of `step` in folder `checkpoint`."""

    KIND: ClassVar[str] = "preempted"
    rank: int
    step: int
    checkpoint: str


# Where a step is, in the order a step goes through them (tinytitan.rank.trainer sets them).
PHASES = (
    "start",  # process start, model build, checkpoint load: until the first step
    "data",  # fetching the step's batches
    "forward/backward",  # the step's token count all-reduce, then forward and backward (FSDP collectives)
    "optimizer",  # gradient clipping (an all-reduce), the optimizer step, the loss all-reduce
    "eval",  # in-loop lm-eval ([eval])
    "checkpoint",  # the interval or preemption save
    "validation",  # held-out loss ([validation])
    "step end",  # between steps: the stop agreement, purging old checkpoints
    "finished",  # training done, closing
)
# Phases whose normal length does not depend on the model or the disk: a hang is declared in
# these only. The others (start, eval, checkpoint, validation) can legitimately take minutes.
WATCHED_PHASES = frozenset({"data", "forward/backward", "optimizer", "step end"})
HEARTBEAT_VERSION = 1


@dataclass(frozen=True)
class Heartbeat:
    """Where rank `rank` is: in `phase` of `step` since `since` (its host's clock, time.time()).

    `first_step` is the first step this process trained (0 before it started one).
    """

    rank: int
    host: str
    pid: int
    step: int
    phase: str
    since: float
    first_step: int
    version: int = HEARTBEAT_VERSION

    @property
    def position(self) -> tuple[int, int]:
        """Orders ranks by progress: a rank at a smaller position is behind."""
        return self.step, PHASES.index(self.phase) if self.phase in PHASES else 0

    @property
    def past_first_step(self) -> bool:
        """The first step of a process includes lazy initialisation (and compilation): not watched."""
        return 0 < self.first_step < self.step


def write_heartbeat(path: Path, beat: Heartbeat) -> None:
    _write(path, dataclasses.asdict(beat))


def read_heartbeat(path: Path) -> Heartbeat | None:
    beat = _typed(Heartbeat, read_note(path))
    return beat if beat is not None and beat.version == HEARTBEAT_VERSION else None


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_note(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


Note = TypeVar("Note", RankNote, ErrorNote, CrashNote, PreemptedNote, Heartbeat)


def _typed(kind: type[Note], data: dict | None) -> Note | None:
    """The note of that kind in `data`, or None when a field is missing or of another type."""
    if data is None:
        return None
    values = {}
    for f in dataclasses.fields(kind):
        if f.name not in data:
            if f.default is dataclasses.MISSING:
                return None
            continue
        value, expected = data[f.name], {"int": int, "float": (int, float), "str": str}[f.type]
        if not isinstance(value, expected) or isinstance(value, bool):
            return None
        values[f.name] = value
    return kind(**values)


def _note(note: RankNote | ErrorNote | CrashNote | PreemptedNote) -> None:
    folder = notes_dir()
    if folder is not None:
        _write(folder / f"{note.KIND}-{note.rank}.json", dataclasses.asdict(note))


def note_rank(rank: int) -> None:
    """This process is rank `rank`, with this pid."""
    _note(RankNote(rank=rank, pid=os.getpid()))


def note_error(rank: int, message: str) -> None:
    _note(ErrorNote(rank=rank, message=message))


def note_crash(rank: int, error: BaseException) -> None:
    """What the rank failed with, in one line (the first line of its message)."""
    text = (str(error).strip().splitlines() or [""])[0]
    message = text if isinstance(error, RankFailure) else f"{type(error).__name__}: {text}".rstrip(": ")
    _note(CrashNote(rank=rank, message=message[:400]))


def note_preempted(rank: int, step: int, checkpoint: str) -> None:
    _note(PreemptedNote(rank=rank, step=step, checkpoint=checkpoint))


def preempt_was_requested() -> bool:
    """True when the launcher asked for a preemption checkpoint (it writes this before signalling)."""
    folder = notes_dir()
    return folder is not None and (folder / PREEMPT_REQUEST).exists()


def read_notes(folder: Path, kind: type[Note]) -> list[Note]:
    """All notes of one kind in a notes folder, by rank."""
    notes = [_typed(kind, read_note(p)) for p in sorted(folder.glob(f"{kind.KIND}-*.json"))]
    return sorted((n for n in notes if n is not None), key=lambda n: n.rank)


# ---- stacks on request ----
_stack_file = None  # kept open for faulthandler, which writes to its file descriptor from the signal handler


def stack_path(folder: Path, rank: int) -> Path:
    return folder / f"stack-{rank}.txt"


def dump_stacks_on_signal(rank: int) -> None:
    """On STACK_SIGNAL, write every thread's Python stack: into the notes folder for the launcher
    to print (torchrun may show this rank's output nowhere, LOG_RANK), else to stderr.

    faulthandler writes from the C signal handler, so a rank stuck anywhere, even holding
    the GIL in native code, answers; only a stopped (SIGSTOP) process does not.
    """
    global _stack_file
    folder = notes_dir()
    if folder is not None:
        _stack_file = open(stack_path(folder, rank), "a")  # noqa: SIM115 - open for the process's life
    faulthandler.register(STACK_SIGNAL, file=_stack_file or sys.stderr, all_threads=True, chain=False)

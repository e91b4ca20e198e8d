"""Naming a hung rank: every rank's heartbeat, the moment progress stops, the rank behind, and its stack.

Each rank writes where it is (step and phase) to the run folder (tinytitan.rank.heartbeat).
Every node's launcher reads all of them. A hang is declared when no rank's position moved
for ``[hang] stall_seconds`` while every rank is inside a training step (data,
forward/backward, optimizer, step end; checkpoints, validation and lm-eval may
legitimately last minutes, and the first step of a process includes its lazy start-up),
and some rank is behind the others. The ranks behind are the cause: their peers are the
victims, blocked one phase later inside a collective. When every rank is at the same place
(all slow, or all stuck alike) nobody waits for a straggler: that takes
``[comm] train_timeout_seconds``, the bound a collective has. Each launcher asks its own
lagging ranks for their Python stacks (faulthandler, ``faults.STACK_SIGNAL``), prints
them, and the supervisor restarts.

Times are the launcher's own (when it saw a heartbeat change), since hosts' clocks differ.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinytitan.run import faults
from tinytitan.run.faults import Heartbeat
from tinytitan.run.folder import RunFolder

STACK_WAIT_S = 5.0  # a rank in uninterruptible I/O (state D) answers late, or not at all
MAX_NAMED = 4  # ranks named in a line; more are counted


@dataclass(frozen=True)
class Watch:
    """What the supervisor needs to know about the run to watch it."""

    run: RunFolder
    checkpoints: Path | None  # None: checkpointing is off
    world_size: int
    stall_seconds: float  # 0: stall detection off
    all_stalled_seconds: float  # the same when no rank is behind another: [comm] train_timeout_seconds
    quiet_seconds: float  # when a peer fails, a rank unchanged this long counts as hung
    interval_s: float  # how often to read the heartbeats (as often as the ranks write them)


@dataclass
class Progress:
    """Every rank's last heartbeat, and when this launcher saw its position change."""

    watch: Watch
    beats: dict[int, Heartbeat] = field(default_factory=dict)
    changed_at: dict[int, float] = field(default_factory=dict)
    next_read: float = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_read

    def read(self, now: float) -> dict[int, Heartbeat]:
        self.next_read = now + self.watch.interval_s
        for rank in range(self.watch.world_size):
            beat = faults.read_heartbeat(self.watch.run.heartbeat(rank))
            if beat is None:
                continue
            old = self.beats.get(rank)
            if old is None or (old.pid, old.step, old.phase) != (beat.pid, beat.step, beat.phase):
                self.changed_at[rank] = now
            self.beats[rank] = beat
        return self.beats

    def unchanged_for(self, rank: int, now: float) -> float:
        return now - self.changed_at.get(rank, now)

    def stalled_for(self, now: float) -> float:
        """Since the last change of any rank's position."""
        return now - max(self.changed_at.values(), default=now)

    def stalled(self, now: float, local: dict[int, int]) -> float | None:
        """How long no rank moved, when that is a hang; else None.

        `local` maps this node's ranks to their current pids: their heartbeats must be these
        processes' (not a previous attempt's). A rank's first write happens before its first
        collective, so once this node's ranks are past their first step, every peer's file is
        current too.
        """
        stall = self.watch.stall_seconds
        if stall <= 0 or len(self.beats) < self.watch.world_size or not local:
            return None
        if any(self.beats.get(rank) is None or self.beats[rank].pid != pid for rank, pid in local.items()):
            return None
        beats = self.beats.values()
        if not all(b.past_first_step and b.phase in faults.WATCHED_PHASES for b in beats):
            return None
        stalled = self.stalled_for(now)
        if len(behind(self.beats)) == len(self.beats):
            stall = max(stall, self.watch.all_stalled_seconds)
        return stalled if stalled >= stall else None


def behind(beats: dict[int, Heartbeat]) -> list[Heartbeat]:
    """The ranks at the smallest (step, phase): all of them when every rank is at the same place."""
    if not beats:
        return []
    low = min(b.position for b in beats.values())
    return [beats[r] for r in sorted(beats) if beats[r].position == low]


def capture_stack(notes: Path, rank: int, pid: int) -> str | None:
    """Asks the rank for every thread's stack (it wrote nothing when it was not set up for it)."""
    path = faults.stack_path(notes, rank)
    before = _size(path)
    if before is None:
        return None
    try:
        os.kill(pid, faults.STACK_SIGNAL)
    except (ProcessLookupError, PermissionError):
        return None
    deadline = time.monotonic() + STACK_WAIT_S
    size, settled_at = before, None
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now_size = _size(path) or 0
        if now_size != size:
            size, settled_at = now_size, time.monotonic()
        elif settled_at is not None and time.monotonic() - settled_at > 0.2:
            break
    if size <= before:
        return None
    with open(path, "rb") as f:
        f.seek(before)
        return f.read(size - before).decode(errors="replace")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


@dataclass
class HangReport:
    """What the launcher found about the ranks behind, for the one line it prints."""

    lagging: list[Heartbeat]
    seconds: float
    everyone: bool = False
    shown: list[int] = field(default_factory=list)  # ranks whose stack this launcher printed
    stopped: list[int] = field(default_factory=list)  # SIGSTOPped (state T): no stack
    silent: list[int] = field(default_factory=list)  # asked, but wrote no stack in time
    stopped_workers: list[str] = field(default_factory=list)  # of the ranks shown: loader workers in state T
    remote: list[Heartbeat] = field(default_factory=list)  # on other nodes: their launchers print them

    def describe(self) -> str:
        """'rank 1 on host X (pid P) made no progress for 12 s in step 4 (data); its stack is above'."""
        first = self.lagging[0]
        who = f"every rank ({len(self.lagging)})" if self.everyone else _names(self.lagging)
        parts = [f"{who} made no progress for {self.seconds:.0f} s in step {first.step} ({first.phase})"]
        if self.shown:
            alone = len(self.shown) == 1 and len(self.lagging) == 1
            parts.append("its stack is above" if alone else f"the stack of {_ranks(self.shown)} is above")
        if self.stopped:
            parts.append(f"{_ranks(self.stopped)} {'is' if len(self.stopped) == 1 else 'are'} stopped "
                         "(SIGSTOP?), so no stack")  # fmt: skip
        if self.silent:
            parts.append(f"{_ranks(self.silent)} wrote no stack within {STACK_WAIT_S:.0f} s")
        if self.stopped_workers:
            more = f" (and {len(self.stopped_workers) - 1} more)" if len(self.stopped_workers) > 1 else ""
            parts.append(f"its {self.stopped_workers[0]}{more} is stopped (SIGSTOP?): the rank waits for it")
        hosts = sorted({b.host for b in self.remote})
        if hosts and not self.everyone:
            parts.append(f"the stack is in the log of host {', '.join(hosts)}")
        return "; ".join(parts)


def _names(beats: list[Heartbeat]) -> str:
    named = [f"rank {b.rank} on host {b.host} (pid {b.pid})" for b in beats[:MAX_NAMED]]
    more = len(beats) - len(named)
    if more:
        return f"{', '.join(named)} and {more} more"
    return named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"

"""The launcher's side of hang naming, as state over time (tinytitan.launcher.hangs has the parts).

The supervisor calls ``poll`` from its loop with this node's ranks and their process states,
and asks ``take_hang`` / ``take_lagging`` when torchrun reports a failure, to say in its one
line why the ranks went. Each attempt (a set of local pids) is dealt with once: either a hang
found here (``_stop_hang``), or a local rank that exited while a peer was stuck behind it
(``_name_ranks_behind``: a collective timed out first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tinytitan.launcher.hangs import STACK_WAIT_S, HangReport, Progress, Watch, behind, capture_stack
from tinytitan.processes import stopped_workers
from tinytitan.run.faults import Heartbeat, RankNote


class HangWatcher:
    def __init__(
        self,
        watch: Watch,
        notes: Path,
        write: Callable[[str], None],
        kill_ranks: Callable[[], None],
        resume_point: Callable[[], str],
    ) -> None:
        self.watch, self.notes = watch, notes
        self.write, self.kill_ranks, self.resume_point = write, kill_ranks, resume_point
        self.progress = Progress(watch)
        self.handled: frozenset[int] = frozenset()  # the local pids whose hang or failure was dealt with
        self.hang: HangReport | None = None  # found here: the next failure line says it instead
        self.kill_at: float | None = None  # when to kill this node's ranks if the hang's node has not
        self.lagging: tuple[HangReport, set[int]] | None = None  # ranks behind these local pids when they exited

    def where(self, rank: int) -> Heartbeat | None:
        return self.progress.beats.get(rank)

    def take_hang(self) -> HangReport | None:
        hang, self.hang, self.kill_at = self.hang, None, None
        return hang

    def take_lagging(self, pid: int) -> HangReport | None:
        lagging, self.lagging = self.lagging, None
        return lagging[0] if lagging is not None and pid in lagging[1] else None

    def poll(self, ranks: list[RankNote], states: dict[int, str | None], stopping: bool) -> None:
        """`states`: pid -> process state of this node's ranks (None: gone); `stopping`: the run was asked to stop."""
        now = time.monotonic()
        gone = [n for n in ranks if states[n.pid] in (None, "Z")]
        watching = not stopping and frozenset(states) != self.handled  # once per attempt
        if self.progress.due(now) or (gone and watching):
            self.progress.read(now)
        if self.hang is not None:
            self._finish_hang(states, now)
        if not watching or self.hang is not None:
            return
        local = {n.rank: n.pid for n in ranks}
        if gone:
            self._name_ranks_behind(gone, local, states, now)
        elif self.progress.stalled(now, local) is not None:
            self.progress.read(now)  # what changed since the last read counts too
            if (stalled := self.progress.stalled(now, local)) is not None:
                self._stop_hang(stalled, local, states)

    def _stop_hang(self, stalled: float, local: dict[int, int], states: dict[int, str | None]) -> None:
        """No rank moved for [hang] stall_seconds. The launcher of a node with ranks behind shows their stacks
        and kills its ranks: torchrun restarts them, and the other nodes' ranks fail or are restarted with them.
        The other nodes' launchers (which see the same heartbeats, read at other moments) give it time first."""
        self.handled = frozenset(states)
        lagging = behind(self.progress.beats)
        report = HangReport(lagging, stalled, everyone=len(lagging) == len(self.progress.beats))
        mine = [b for b in lagging if local.get(b.rank) == b.pid]
        report.remote = [b for b in lagging if local.get(b.rank) != b.pid]
        self.hang = report
        if mine:
            self._show_stacks(report, mine[:1] if report.everyone else mine, states)  # one stack per node is enough
            self.kill_ranks()
        else:
            self.kill_at = time.monotonic() + self.watch.interval_s + STACK_WAIT_S + 1

    def _finish_hang(self, states: dict[int, str | None], now: float) -> None:
        """On a node without lagging ranks: kill its ranks if they outlive the grace; or, when torchrun restarted
        them to rejoin the other nodes (no failure line then), say why."""
        assert self.hang is not None
        if not frozenset(states) & self.handled:
            hang = self.take_hang()
            self.write(f"tinytitan: {hang.describe()}; torchrun restarts every rank from {self.resume_point()}\n")
        elif self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            self.kill_ranks()

    def _name_ranks_behind(
        self, gone: list[RankNote], local: dict[int, int], states: dict[int, str | None], now: float
    ) -> None:
        """A rank of this node exited: peers behind it that have not moved for a while are the likely cause
        (it timed out waiting for them). Show their stacks before torchrun stops them."""
        self.handled = frozenset(states)
        beats = self.progress.beats
        failed = [beats[n.rank].position for n in gone if n.rank in beats and beats[n.rank].pid == n.pid]
        if not failed:
            return

        def alive(b: Heartbeat) -> bool:  # another node's rank: as far as this node can tell
            return local.get(b.rank) != b.pid or states.get(b.pid) not in (None, "Z")

        quiet = self.watch.quiet_seconds
        stuck = [
            b for r, b in sorted(beats.items())
            if b.position < min(failed) and self.progress.unchanged_for(r, now) >= quiet and alive(b)
        ]  # fmt: skip
        if not stuck:
            return
        low = min(b.position for b in stuck)
        lagging = [b for b in stuck if b.position == low]
        report = HangReport(lagging, min(self.progress.unchanged_for(b.rank, now) for b in lagging))
        self._show_stacks(report, [b for b in lagging if local.get(b.rank) == b.pid], states)
        self.lagging = report, {n.pid for n in gone}

    def _show_stacks(self, report: HangReport, beats: list[Heartbeat], states: dict[int, str | None]) -> None:
        for b in beats:
            if states.get(b.pid) == "T":
                report.stopped.append(b.rank)
                continue
            stack = capture_stack(self.notes, b.rank, b.pid)
            if stack is None:
                report.silent.append(b.rank)
                continue
            report.shown.append(b.rank)
            self.write("".join(f"[rank{b.rank}]: {line}\n" for line in stack.splitlines()))
        for b in beats:  # a rank waiting for its stopped data loader worker: its stack shows only the wait
            report.stopped_workers += stopped_workers(b.pid)

"""This rank's progress, written to ``<dump_folder>/.tinytitan/heartbeats/rank-<N>.json`` for the launchers.

The training loop only records where it is, in memory (``begin_step``, ``enter``: one
tuple assigned). A daemon thread writes the file every ``interval_s`` when that changed,
so a step pays no file I/O, and a rank stuck anywhere keeps its last position on disk.
Every node's launcher reads every rank's file (the dump folder is shared across nodes,
as DCP checkpoints need) and names the rank that is behind when progress stops
(tinytitan.launcher.hangs).
"""

from __future__ import annotations

import os
import socket
import threading
import time

from tinytitan.run import faults
from tinytitan.run.folder import RunFolder

MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 5.0


def flush_interval(job_config) -> float:
    """A tenth of the shortest wait that names a hang (the stall time, else half the collective timeout),
    within [0.2 s, 5 s]: fine enough to tell who is behind, rare enough for a shared filesystem."""
    from tinytitan.job_config import stall_seconds

    scale = stall_seconds(job_config) or job_config.comm.train_timeout_seconds / 2
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, scale / 10))


class HeartbeatWriter:
    def __init__(self, run: RunFolder, rank: int, interval_s: float) -> None:
        self.path = run.heartbeat(rank)
        self.rank, self.pid, self.host = rank, os.getpid(), socket.gethostname()
        self.interval_s = interval_s
        self.first_step = 0
        self._state = (0, "start", time.time())  # (step, phase, since): replaced whole, read by the thread
        self._written: tuple | None = None
        self._stop = threading.Event()
        self._flushing = threading.Lock()  # the thread and close() share one temporary file name
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # as for a failed write below: no heartbeat, training goes on
        self.flush()  # on disk before the first collective: a launcher seeing peers train knows this file is current
        self._thread = threading.Thread(target=self._run, name="tinytitan-heartbeat", daemon=True)
        self._thread.start()

    def begin_step(self, step: int) -> None:
        if not self.first_step:
            self.first_step = step
        self._state = (step, "data", time.time())

    def enter(self, phase: str) -> None:
        self._state = (self._state[0], phase, time.time())

    def close(self) -> None:
        """Stops the thread and writes the last position ("finished" after training): a rank closing down
        is not taken for a stalled one."""
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        with self._flushing:
            state = self._state
            if state == self._written:
                return
            step, phase, since = state
            beat = faults.Heartbeat(
                rank=self.rank, host=self.host, pid=self.pid, step=step, phase=phase, since=since,
                first_step=self.first_step,
            )  # fmt: skip
            try:
                faults.write_heartbeat(self.path, beat)
            except OSError:
                return  # a full or unreachable disk must not stop training; the next change tries again
            self._written = state


def writer_for(job_config, rank: int) -> HeartbeatWriter:
    return HeartbeatWriter(RunFolder.of(job_config), rank, flush_interval(job_config))

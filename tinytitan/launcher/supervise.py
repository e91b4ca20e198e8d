"""Runs torchrun under the launcher: signals, restarts, hangs and errors, each told in one line.

- ``kill -9`` of the launcher: torchrun gets SIGKILL from the kernel (parent-death
  signal), and each rank the same when torchrun goes, so nothing trains on.
- SIGTERM or SIGUSR1 (preemption, ``scancel``, SLURM's ``--signal``): the launcher
  writes a request note and sends SIGUSR1 to every rank; the ranks finish their step,
  agree, save a checkpoint of it and exit 0, so torchrun does not restart them. The
  launcher then exits with ``PREEMPTED_EXIT_CODE``. torchrun itself ignores these two
  signals: its own forwarding would SIGKILL the ranks 30 s later, mid-checkpoint, and
  a second copy (SLURM signals every process of a step) would abort its shutdown.
- SIGINT goes to torchrun, which stops the ranks at once (they exit quietly), and the
  launcher says which checkpoint the same command resumes from. A second signal, more than
  ``DUPLICATE_WINDOW_S`` after the first, kills all (closer ones are copies of the first).
- A rank that dies: torchrun restarts the group (``--max-restarts``); the launcher
  names the rank, its exit code or signal, and a rank that was behind (hung), with its stack.
- A hang (tinytitan.launcher.hangs): no rank moved for ``[hang] stall_seconds``; the launcher
  prints the stacks of its ranks that are behind, kills its ranks, and torchrun restarts.
- The victims' collective-failure tracebacks become one line each (tinytitan.launcher.rank_output).
- Every rank failing with a ``TinytitanError``: that one line, not torchrun's report.
- A rank failing otherwise: the failure line names its exception (``CrashNote``; a dead data loader worker
  without a traceback), and with no restart left, the checkpoint the same command resumes from;
  torchrun's ``ChildFailedError`` report after it would only repeat the rank's traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tinytitan.checkpoint.completeness import newest_complete
from tinytitan.launcher.hangs import Watch
from tinytitan.launcher.rank_output import RankOutput
from tinytitan.launcher.watcher import HangWatcher
from tinytitan.processes import describe_exit, die_with_parent, process_state
from tinytitan.run import faults
from tinytitan.run.faults import (
    DUPLICATE_WINDOW_S,
    CrashNote,
    ErrorNote,
    PreemptedNote,
    RankNote,
)
from tinytitan.run.folder import step_name

FAILURE_LINE = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+) \(pid: (\d+)\)")
RANK_PREFIX = re.compile(r"^\[(?:default|rank)\d+\]:")
TORCHRUN_LOG = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d")  # torch elastic's own log lines


class Supervisor:
    def __init__(
        self, cmd: Sequence[str], env: Mapping[str, str], nproc: int, max_restarts: int, watch: Watch | None = None
    ):
        self.cmd, self.nproc, self.max_restarts = list(cmd), nproc, max_restarts
        self.notes = Path(tempfile.mkdtemp(prefix="tinytitan-notes-"))
        self.env = {**env, faults.NOTES_ENV: str(self.notes), faults.LAUNCHER_ENV: str(os.getpid())}
        self.watch = watch
        self.proc: subprocess.Popen | None = None
        self.failures = 0
        self.signals: list[int] = []
        self.first_signal_at = 0.0
        self.held: list[str] = []  # torchrun's closing report, shown only if it says more than we do
        self.holding = False
        self.signalled_pids: set[int] = set()
        self.killed_for_errors = False
        self.stopped: dict[int, faults.Heartbeat | None] = {}  # rank -> where, of ranks seen stopped (SIGSTOP)
        self.killed_for_hang = False  # the last failure: torchrun's report would only say SIGKILL
        self.out_lock = threading.RLock()  # stacks from the main thread, torchrun's output from the reader
        self.output = RankOutput(self._write)
        self.hangs = (
            HangWatcher(watch, self.notes, self._write, self._kill_ranks, self._resume_point) if watch else None
        )

    # ---- torchrun's process ----
    @staticmethod
    def _child_setup() -> None:
        os.setpgid(0, 0)  # Ctrl-C reaches the launcher only, which forwards it once
        for sig in faults.PREEMPT_SIGNALS:  # inherited across exec; torchrun leaves them alone
            signal.signal(sig, signal.SIG_IGN)
        die_with_parent(signal.SIGKILL)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
        try:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stderr=subprocess.PIPE, preexec_fn=self._child_setup)
            reader = threading.Thread(target=self._read_stderr, daemon=True)
            reader.start()
            while self.proc.poll() is None:
                time.sleep(0.2)
                self._poll_notes()
            reader.join(timeout=10)
            return self._outcome(self.proc.returncode)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(self.notes, ignore_errors=True)

    def _kill_all(self) -> None:
        """torchrun and every rank we know of, now (the ranks would also follow torchrun)."""
        self._kill_ranks()
        if self.proc is not None:
            _send(self.proc.pid, signal.SIGKILL)

    def _kill_ranks(self) -> None:
        for pid in self._worker_pids():
            _send(pid, signal.SIGKILL)

    def _worker_pids(self) -> list[int]:
        return [n.pid for n in faults.read_notes(self.notes, RankNote)]

    # ---- signals to the launcher ----
    def _on_signal(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.signals and now - self.first_signal_at < DUPLICATE_WINDOW_S:
            return  # the same request twice: SLURM signals every process of a step, and srun forwards
        if not self.signals:
            self.first_signal_at = now
        self.signals.append(signum)
        if len(self.signals) > 1:
            self._say(f"tinytitan: {name} again: stopping every rank now")
            self._kill_all()
        elif signum == signal.SIGINT:
            self.output.drop_peer_failures = True
            self._say("tinytitan: interrupted: stopping the ranks (Ctrl-C again to kill them)")
            if self.proc is not None:
                _send(self.proc.pid, signal.SIGINT)
        else:
            (self.notes / faults.PREEMPT_REQUEST).write_text(name)
            self._say(f"tinytitan: {name}: each rank finishes its step and saves a checkpoint of it, then the run "
                      f"stops with exit code {faults.PREEMPTED_EXIT_CODE}; send it again to stop at once")  # fmt: skip
            self._signal_new_workers()

    def _signal_new_workers(self) -> None:
        for pid in self._worker_pids():
            if pid not in self.signalled_pids:
                self.signalled_pids.add(pid)
                _send(pid, signal.SIGUSR1)

    def _poll_notes(self) -> None:
        ranks = faults.read_notes(self.notes, RankNote)
        states = {n.pid: process_state(n.pid) for n in ranks}
        gone = [n for n in ranks if states[n.pid] in (None, "Z")]
        for n in ranks:
            if states[n.pid] == "T" and n.rank not in self.stopped:
                self.stopped[n.rank] = self.hangs.where(n.rank) if self.hangs else None
        if self.hangs is not None:
            self.hangs.poll(ranks, states, stopping=bool(self.signals))  # before a stopped rank is killed below
        if gone:
            for n in ranks:  # a peer is gone: a stopped rank would hold torchrun's restart up for 30 s
                if states[n.pid] == "T":
                    _send(n.pid, signal.SIGKILL)
        if (self.notes / faults.PREEMPT_REQUEST).exists():
            self._signal_new_workers()  # ranks of a restart that began meanwhile
        errors = faults.read_notes(self.notes, ErrorNote)
        if len(errors) >= self.nproc and not self.killed_for_errors:
            # Bad input fails the same way after any restart: do not retry it.
            self.killed_for_errors = True
            time.sleep(0.5)  # let torchrun log the failure before it goes
            self._kill_all()

    # ---- torchrun's output ----
    def _write(self, line: str) -> None:
        with self.out_lock:
            sys.stderr.write(line)
            sys.stderr.flush()

    def _say(self, line: str) -> None:
        self._write(line + "\n")

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            failure = FAILURE_LINE.search(line)
            if failure:
                self.output.flush()
                self._on_failure(int(failure.group(1)), int(failure.group(2)), int(failure.group(3)))
                continue
            if not RANK_PREFIX.match(line) and line.startswith("Traceback (most recent call last)"):
                self.holding = True  # torchrun's own closing traceback, after every rank has gone
            if self.holding:
                self.held.append(line)
            elif not ((self.signals or self.failures) and TORCHRUN_LOG.match(line)):  # its chatter after ours
                self.output.feed(line)
        self.output.flush()

    def _on_failure(self, exitcode: int, local_rank: int, pid: int) -> None:
        ranks = faults.read_notes(self.notes, RankNote)
        by_pid = {n.pid: n.rank for n in ranks}
        rank = by_pid.get(pid, f"local {local_rank}")
        hang = self.hangs.take_hang() if self.hangs else None
        lagging = self.hangs.take_lagging(pid) if self.hangs else None
        self.killed_for_hang = hang is not None
        if hang is not None:
            detail = hang.describe()  # the ranks were killed for it: the exit code says nothing more
        else:
            detail = f"rank {rank} (pid {pid}) failed with {describe_exit(exitcode)}"
            crashes = {n.rank: n.message for n in faults.read_notes(self.notes, CrashNote)}
            if rank in crashes:
                detail += f": {crashes[rank]}"
            if self.stopped:
                detail += "; " + ", ".join(
                    f"rank {r} was stopped (SIGSTOP?)" + (f" in step {b.step} ({b.phase})" if b else "")
                    for r, b in sorted(self.stopped.items())
                )
            elif lagging is not None:
                detail += f"; behind it, {lagging.describe()}"
        self.stopped.clear()
        self.failures += 1
        if self.signals or self.killed_for_errors:
            action = "not restarting: the run was asked to stop"
        elif self.failures <= self.max_restarts:
            action = (
                f"restarting every rank from {self._resume_point()} (restart {self.failures} of {self.max_restarts})"
            )
            for note in [*self.notes.glob("error-*.json"), *self.notes.glob("crash-*.json")]:
                note.unlink(missing_ok=True)
        else:
            action = f"no restarts left (--max-restarts {self.max_restarts}); {self._resume_hint()}"
        self._say(f"tinytitan: {detail}; {action}")

    def _resume_point(self) -> str:
        """Where a restart continues from."""
        if self.watch is None:
            return "the newest complete checkpoint"
        if self.watch.checkpoints is None:
            return "step 0 (checkpointing is off)"
        newest = newest_complete(self.watch.checkpoints)
        return f"the {step_name(newest[0])} checkpoint" if newest else "step 0 (no complete checkpoint yet)"

    # ---- the end ----
    def _outcome(self, returncode: int) -> int:
        preempted = faults.read_notes(self.notes, PreemptedNote)
        errors = faults.read_notes(self.notes, ErrorNote)
        if preempted:
            note = preempted[0]
            self._say(f"tinytitan: preempted: checkpoint {note.checkpoint} holds step {note.step}; run the same "
                      f"command to resume (exit code {faults.PREEMPTED_EXIT_CODE})")  # fmt: skip
            return faults.PREEMPTED_EXIT_CODE
        messages = sorted({e.message for e in errors})
        if returncode != 0 and len(messages) == 1 and len(errors) >= self.nproc:
            self._say(f"tinytitan: error: {messages[0]}")
            return 2
        if returncode != 0 and self.signals:
            # torchrun's traceback says only that it got the signal; the ranks exited quietly
            code = 128 + self.signals[0]
            self._say(f"tinytitan: stopped (exit code {code}); {self._resume_hint()}")
            return code
        if not self.killed_for_hang and not self.failures:  # after our failure line, torchrun's dump repeats it
            sys.stderr.writelines(self.held)
        for e in errors:
            self._say(f"tinytitan: rank {e.rank}: error: {e.message}")
        return returncode

    def _resume_hint(self) -> str:
        """What the same command does next."""
        if self.watch is None:
            return "run the same command to resume from the newest complete checkpoint"
        if self.watch.checkpoints is None:
            return "checkpointing is off: the same command starts again from step 0"
        newest = newest_complete(self.watch.checkpoints)
        if newest is None:
            return "no complete checkpoint yet: the same command starts again from step 0"
        step, folder = newest
        return f"run the same command to resume from step {step} ({folder})"


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

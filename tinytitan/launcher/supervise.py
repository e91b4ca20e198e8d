"""Runs torchrun under the launcher: signals, restarts, hangs and errors, each told in one line.

- ``kill -9`` of the launcher: torchrun gets SIGKILL from the kernel (parent-death
  signal), and each rank the same when torchrun goes, so nothing trains on.
- SIGTERM or SIGUSR1 (preemption, ``scancel``, SLURM's ``--signal``): the launcher
  writes a request note and sends SIGUSR1 to every rank; the ranks finish their step,
  agree, save a checkpoint of it and exit 0, so torchrun does not restart them. The
  launcher then exits with ``PREEMPTED_EXIT_CODE``. torchrun itself ignores these two
  signals: its own forwarding would SIGKILL the ranks 30 s later, mid-checkpoint, and
  a second copy (SLURM signals every process of a step) would abort its shutdown.
- SIGINT goes to torchrun, which stops the ranks at once. A second signal, more than
  ``DUPLICATE_WINDOW_S`` after the first, kills all (closer ones are copies of the first).
- A rank that dies: torchrun restarts the group (``--max-restarts``); the launcher
  names the rank, its exit code or signal, and the step each rank had reached.
- Every rank failing with a ``TinytitanError``: that one line, not torchrun's report.
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

from tinytitan import faults
from tinytitan.faults import DUPLICATE_WINDOW_S

FAILURE_LINE = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+) \(pid: (\d+)\)")
RANK_PREFIX = re.compile(r"^\[(?:default|rank)\d+\]:")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class Supervisor:
    def __init__(self, cmd: Sequence[str], env: Mapping[str, str], nproc: int, max_restarts: int):
        self.cmd, self.nproc, self.max_restarts = list(cmd), nproc, max_restarts
        self.notes = Path(tempfile.mkdtemp(prefix="tinytitan-notes-"))
        self.env = {**env, faults.NOTES_ENV: str(self.notes), faults.LAUNCHER_ENV: str(os.getpid())}
        self.proc: subprocess.Popen | None = None
        self.failures = 0
        self.signals: list[int] = []
        self.first_signal_at = 0.0
        self.held: list[str] = []  # torchrun's closing report, shown only if it says more than we do
        self.holding = False
        self.signalled_pids: set[int] = set()
        self.killed_for_errors = False
        self.stopped: dict[int, int] = {}  # rank -> step, of ranks seen stopped (SIGSTOP, a debugger)

    # ---- torchrun's process ----
    @staticmethod
    def _child_setup() -> None:
        os.setpgid(0, 0)  # Ctrl-C reaches the launcher only, which forwards it once
        for sig in faults.PREEMPT_SIGNALS:  # inherited across exec; torchrun leaves them alone
            signal.signal(sig, signal.SIG_IGN)
        faults.die_with_parent(signal.SIGKILL)

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
        for pid in self._worker_pids():
            _send(pid, signal.SIGKILL)
        if self.proc is not None:
            _send(self.proc.pid, signal.SIGKILL)

    def _worker_pids(self) -> list[int]:
        return [n["pid"] for n in faults.read_notes(self.notes, "rank")]

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
            print(f"tinytitan: {name} again: stopping every rank now", file=sys.stderr, flush=True)
            self._kill_all()
        elif signum == signal.SIGINT:
            print("tinytitan: interrupted: stopping the ranks (Ctrl-C again to kill them)", file=sys.stderr, flush=True)
            if self.proc is not None:
                _send(self.proc.pid, signal.SIGINT)
        else:
            (self.notes / faults.PREEMPT_REQUEST).write_text(name)
            print(f"tinytitan: {name}: each rank finishes its step and saves a checkpoint of it, then the run "
                  f"stops with exit code {faults.PREEMPTED_EXIT_CODE}; send it again to stop at once",
                  file=sys.stderr, flush=True)  # fmt: skip
            self._signal_new_workers()

    def _signal_new_workers(self) -> None:
        for pid in self._worker_pids():
            if pid not in self.signalled_pids:
                self.signalled_pids.add(pid)
                _send(pid, signal.SIGUSR1)

    def _poll_notes(self) -> None:
        ranks = faults.read_notes(self.notes, "rank")
        states = {n["pid"]: _process_state(n["pid"]) for n in ranks}
        for n in ranks:
            if states[n["pid"]] == "T":
                self.stopped[n["rank"]] = n["step"]
        if any(state in (None, "Z") for state in states.values()):
            for n in ranks:  # a peer is gone: a stopped rank would hold torchrun's restart up for 30 s
                if states[n["pid"]] == "T":
                    _send(n["pid"], signal.SIGKILL)
        if (self.notes / faults.PREEMPT_REQUEST).exists():
            self._signal_new_workers()  # ranks of a restart that began meanwhile
        errors = faults.read_notes(self.notes, "error")
        if len(errors) >= self.nproc and not self.killed_for_errors:
            # Bad input fails the same way after any restart: do not retry it.
            self.killed_for_errors = True
            time.sleep(0.5)  # let torchrun log the failure before it goes
            self._kill_all()

    # ---- torchrun's output ----
    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            failure = FAILURE_LINE.search(line)
            if failure:
                self._on_failure(int(failure.group(1)), int(failure.group(2)), int(failure.group(3)))
                continue
            if not RANK_PREFIX.match(line) and line.startswith("Traceback (most recent call last)"):
                self.holding = True  # torchrun's own closing traceback, after every rank has gone
            if self.holding:
                self.held.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    def _on_failure(self, exitcode: int, local_rank: int, pid: int) -> None:
        ranks = faults.read_notes(self.notes, "rank")
        by_pid = {n["pid"]: n for n in ranks}
        rank = by_pid.get(pid, {}).get("rank", f"local {local_rank}")
        detail = f"rank {rank} (pid {pid}) failed with {describe_exit(exitcode)}"
        if self.stopped:
            stuck = sorted(self.stopped.items())
            detail += "; " + ", ".join(f"rank {r} was stopped (SIGSTOP?) after step {step}" for r, step in stuck)
            self.stopped.clear()
        else:
            others = [n for n in ranks if n["pid"] != pid]
            ahead = max((n["step"] for n in others), default=0)
            for n in others:
                if n["step"] < ahead - 1:  # the failed rank's peers may have finished one step more
                    detail += f"; rank {n['rank']} is behind, at step {n['step']} of {ahead} (hung?)"
        self.failures += 1
        if self.signals or self.killed_for_errors:
            action = "not restarting: the run was asked to stop"
        elif self.failures <= self.max_restarts:
            action = (f"restarting every rank from the newest complete checkpoint "
                      f"(restart {self.failures} of {self.max_restarts})")  # fmt: skip
            for note in self.notes.glob("error-*.json"):
                note.unlink(missing_ok=True)
        else:
            action = f"no restarts left (--max-restarts {self.max_restarts})"
        print(f"tinytitan: {detail}; {action}", file=sys.stderr, flush=True)

    # ---- the end ----
    def _outcome(self, returncode: int) -> int:
        preempted = faults.read_notes(self.notes, "preempted")
        errors = faults.read_notes(self.notes, "error")
        if preempted:
            note = preempted[0]
            print(f"tinytitan: preempted: checkpoint {note['checkpoint']} holds step {note['step']}; run the same "
                  f"command to resume (exit code {faults.PREEMPTED_EXIT_CODE})", file=sys.stderr, flush=True)  # fmt: skip
            return faults.PREEMPTED_EXIT_CODE
        messages = sorted({e["message"] for e in errors})
        if returncode != 0 and len(messages) == 1 and len(errors) >= self.nproc:
            print(f"tinytitan: error: {messages[0]}", file=sys.stderr, flush=True)
            return 2
        sys.stderr.writelines(self.held)
        for e in errors:
            print(f"tinytitan: rank {e['rank']}: error: {e['message']}", file=sys.stderr, flush=True)
        if returncode != 0 and self.signals:
            return 128 + self.signals[0]
        return returncode


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

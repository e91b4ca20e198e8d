"""A rank's stop request: one signal asks for a checkpoint at the step's end; a second, later one exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tinytitan.run.faults import DUPLICATE_WINDOW_S, NOTES_ENV

RANK = """
import os, signal, sys, time
from tinytitan.rank.preemption import StopRequest
stop = StopRequest()
stop.install()
os.kill(os.getpid(), signal.SIGUSR1)
assert stop.signal_name == "SIGUSR1", stop.signal_name
time.sleep(float(sys.argv[1]))
os.kill(os.getpid(), signal.SIGUSR1)
time.sleep(1)
print("still running:", stop.signal_name)
"""


def rank_signalled_twice(gap_s: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != NOTES_ENV}  # a rank started without the launcher
    return subprocess.run([sys.executable, "-c", RANK, str(gap_s)], env=env, capture_output=True, text=True, timeout=60)


def test_a_second_signal_after_the_window_exits_at_once():
    proc = rank_signalled_twice(DUPLICATE_WINDOW_S + 0.3)
    assert proc.returncode == 128 + signal.SIGUSR1 and "still running" not in proc.stdout, proc.stderr


def test_copies_of_the_first_signal_are_one_request():
    """SLURM signals every process of a step and srun forwards the signal too: copies arrive together."""
    proc = rank_signalled_twice(0.1)
    assert proc.returncode == 0 and proc.stdout.strip() == "still running: SIGUSR1", proc.stderr

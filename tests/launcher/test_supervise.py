"""The launcher's supervisor and signals: a second SIGTERM, after the duplicate window, kills torchrun at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.helpers import descendants
from tinytitan.run.faults import DUPLICATE_WINDOW_S

# The supervisor around a stand-in for torchrun that ignores SIGTERM (as torchrun does: it is
# started with the preemption signals ignored) and would run for a minute.
LAUNCHER = """
import os, sys
from tinytitan.launcher.supervise import Supervisor
sys.exit(Supervisor([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), 1, 0).run())
"""


def test_a_second_sigterm_stops_everything_at_once():
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (children := descendants(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, "the stand-in for torchrun never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    time.sleep(DUPLICATE_WINDOW_S + 0.3)
    assert proc.poll() is None  # the first one asked for a checkpoint and waits for it
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    proc.wait(timeout=15)
    stderr = proc.stderr.read()
    assert time.monotonic() - started < 10
    assert "SIGTERM: each rank finishes its step" in stderr and "SIGTERM again: stopping every rank now" in stderr
    assert proc.returncode == 128 + signal.SIGTERM  # stopped by the signal, not preempted (75)
    for pid in children:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        assert state == "Z", f"pid {pid} outlived the launcher"

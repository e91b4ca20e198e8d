"""Fault injection for the hang tests: a rank that stops making progress, asleep inside Python.

Loaded into the training processes with ``--experimental.custom_import tests.hang_in_data``.
TINYTITAN_TEST_HANG="RANK:STEP:MARKER" makes that rank fall asleep while it fetches the batch
of that step, once: it creates the file MARKER first, and no process hangs while it exists
(a restart, on this node or another, goes on). Its peers wait for it inside the step's first
collective, as a real hang (a stalled filesystem read, a deadlocked loader) leaves them.
"""

import os
import time
from pathlib import Path

from torchtitan.train import Trainer

import tinytitan.register  # noqa: F401  (the TrainSpec this run still needs)

_RANK, _STEP, _MARKER = (os.environ.get("TINYTITAN_TEST_HANG", "") + "::").split(":")[:3]
_batches = Trainer.batch_generator


def sleep_forever_in_data_loading() -> None:
    while True:
        time.sleep(3600)


def _batches_that_hang(self, data_iterable):
    for batch in _batches(self, data_iterable):
        if _MARKER and os.environ.get("RANK") == _RANK and self.step == int(_STEP) and not Path(_MARKER).exists():
            Path(_MARKER).touch()
            sleep_forever_in_data_loading()
        yield batch


Trainer.batch_generator = _batches_that_hang

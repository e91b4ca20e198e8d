"""Fault injection: a rank's data loader worker killed with SIGKILL (the OOM killer, an operator).

Loaded into the training processes with ``--experimental.custom_import tests.kill_loader_worker``.
TINYTITAN_TEST_KILL_WORKER="RANK:STEP:MARKER" makes that rank SIGKILL its first loader worker when it
fetches the batch of that step, once: it creates the file MARKER first (a restart goes on).
"""

import os
import signal
from pathlib import Path

from torchtitan.train import Trainer

import tinytitan.register  # noqa: F401  (the TrainSpec this run still needs)

_RANK, _STEP, _MARKER = (os.environ.get("TINYTITAN_TEST_KILL_WORKER", "") + "::").split(":")[:3]
_batches = Trainer.batch_generator


def _batches_with_a_killed_worker(self, data_iterable):
    for batch in _batches(self, data_iterable):
        if _MARKER and os.environ.get("RANK") == _RANK and self.step == int(_STEP) and not Path(_MARKER).exists():
            Path(_MARKER).touch()
            os.kill(self.dataloader._procs[0].pid, signal.SIGKILL)
        yield batch


Trainer.batch_generator = _batches_with_a_killed_worker

"""Fault injection for the checkpoint tests: a real SIGKILL in the middle of a DCP save.

Loaded into the training processes with ``--experimental.custom_import tests.crash_in_save``.
When the checkpoint folder named by TINYTITAN_TEST_CRASH_IN_SAVE (e.g. ``step-8``) is being
written, the coordinating rank kills itself after every rank wrote its tensor files and
before ``.metadata`` exists: what a node failure during a save leaves on disk.
"""

import os
import signal

import torch.distributed.checkpoint.filesystem as dcp_filesystem

import tinytitan.register  # noqa: F401  (the TrainSpec this run still needs)

_TARGET = os.environ.get("TINYTITAN_TEST_CRASH_IN_SAVE", "")
_finish = dcp_filesystem.FileSystemWriter.finish


def _finish_or_die(self, metadata, results):
    if _TARGET and os.path.basename(os.fspath(self.path).rstrip("/")) == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
    return _finish(self, metadata, results)


dcp_filesystem.FileSystemWriter.finish = _finish_or_die

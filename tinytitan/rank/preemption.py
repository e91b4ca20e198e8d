"""Inside each rank: turn SIGTERM/SIGUSR1 into "finish this step, checkpoint it, exit 0".

Signals may reach some ranks only, or at different moments, so the decision is an
all-reduce of a flag at the end of every step on a small gloo group (CPU tensors:
no GPU synchronisation): every rank stops after the same step. A second signal more
than ``DUPLICATE_WINDOW_S`` after the first exits at once; copies closer together
are the same request delivered twice (SLURM signals every process of a step, and the
launcher forwards too).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from tinytitan.compat import set_group_timeout
from tinytitan.run import faults
from tinytitan.run.faults import DUPLICATE_WINDOW_S

_TORCHRUN_GRACE_S = 1.0  # how long a SIGTERM waits for the launcher's request note


class StopRequest:
    """Set by the signal handler; read at step ends."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.signal_name = ""

    def install(self) -> None:
        for sig in faults.PREEMPT_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        now = time.monotonic()
        if self.first is not None:
            if now - self.first > DUPLICATE_WINDOW_S:
                os._exit(128 + signum)  # second request: stop now, the partial folder is ignored later
            return
        if signum == signal.SIGTERM and faults.notes_dir() is not None and not self._launcher_asked():
            # torchrun stops the survivors this way before a restart: die as if unhandled.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.first = now
        self.signal_name = signal.Signals(signum).name

    @staticmethod
    def _launcher_asked() -> bool:
        deadline = time.monotonic() + _TORCHRUN_GRACE_S
        while not faults.preempt_was_requested():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @property
    def requested(self) -> bool:
        return self.first is not None


class StepAgreement:
    """All ranks learn whether any rank was asked to stop, over gloo."""

    def __init__(self, timeout_s: float) -> None:
        self.group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))

    def set_timeout(self, timeout_s: float) -> None:
        """After the first step, as torchtitan does for its groups: a hung rank is noticed sooner."""
        set_group_timeout(self.group, timeout_s)

    def any(self, flag: bool) -> bool:
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.group)
        return bool(value.item())

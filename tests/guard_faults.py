"""Fault injection for the guard tests: a NaN in one rank's gradient, or a step's loss multiplied.

Loaded into the training processes with ``--experimental.custom_import tests.guard_faults``.
TINYTITAN_TEST_GUARD is a comma-separated list of ``KIND:RANK:STEP[:COUNT]``:

- ``nan:1:3``: after the backward of step 3, rank 1 writes a NaN into its shard of the first gradient;
- ``nan:1:9:2``: the same at steps 9 and 10 (COUNT steps from STEP), once: a step is poisoned the first
  time it runs only, so after a rollback the same step numbers train normally;
- ``spike:0:6``: step 6's loss on rank 0 is multiplied by 1e4 before the backward (gradients too).
"""

import os

import torch
from torchtitan.train import Trainer

import tinytitan.register  # noqa: F401  (the TrainSpec this run still needs)

_FAULTS = []
for item in filter(None, os.environ.get("TINYTITAN_TEST_GUARD", "").split(",")):
    kind, rank, step, *count = item.split(":")
    _FAULTS.append((kind, int(rank), int(step), int(count[0]) if count else 1))
_done: set = set()  # (kind, step) already injected in this process
_forward_backward = Trainer.forward_backward_step


def _due(kind: str, step: int) -> bool:
    rank = int(os.environ.get("RANK", "0"))
    for k, r, first, count in _FAULTS:
        if k == kind and first <= step < first + count and (kind, step) not in _done:
            _done.add((kind, step))
            return r == rank
    return False


def _with_faults(self, **kwargs):
    if _due("spike", self.step):
        loss_fn = self.loss_fn
        self.loss_fn = lambda *a, **kw: loss_fn(*a, **kw) * 1e4
        try:
            return _forward_backward(self, **kwargs)
        finally:
            self.loss_fn = loss_fn
    loss = _forward_backward(self, **kwargs)
    if _due("nan", self.step):
        grad = next(p.grad for m in self.model_parts for p in m.parameters() if p.grad is not None)
        local = grad.to_local() if hasattr(grad, "to_local") else grad
        with torch.no_grad():
            local.view(-1)[0] = float("nan")
    return loss


Trainer.forward_backward_step = _with_faults

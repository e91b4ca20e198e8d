"""Records the weights a (resumed) training process starts its first step with, for the resume tests.

Loaded into the training processes with ``--experimental.custom_import tests.record_weights``. Rank 0
writes ``<dump_folder>/received/weights-step<s>.pt`` (every model parameter, whole, as float tensors)
when the trainer hands it its first microbatch, i.e. after the checkpoint was loaded and before any
update: a test compares them with the checkpoint the run resumed from.
"""

import os

import torch
import torch.distributed as dist
from torchtitan.train import Trainer

import tinytitan.register  # noqa: F401  (the TrainSpec this run still needs)

_forward_backward = Trainer.forward_backward_step


def _recording(self, *, input_dict, labels, **kwargs):
    if not getattr(self, "_weights_recorded", False):
        self._weights_recorded = True
        state = {}
        for name, p in self.model_parts[0].named_parameters():
            full = p.full_tensor() if hasattr(p, "full_tensor") else p  # a collective: every rank calls it
            state[name] = full.detach().cpu().clone()
        if not dist.is_initialized() or dist.get_rank() == 0:
            folder = os.path.join(self.job_config.job.dump_folder, "received")
            os.makedirs(folder, exist_ok=True)
            torch.save(state, os.path.join(folder, f"weights-step{self.step}.pt"))
    return _forward_backward(self, input_dict=input_dict, labels=labels, **kwargs)


Trainer.forward_backward_step = _recording

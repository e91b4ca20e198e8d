"""Records what the model receives, for the tests: every microbatch's inputs and labels, per rank and step.

Loaded into the training processes with ``--experimental.custom_import tests.record_batches``. Each
rank writes ``<dump_folder>/received/rank<r>-step<s>-<k>.npz`` (``inputs``, ``labels``) as the trainer
hands the microbatch to the model, so a test can check the data the model trained on, not the loader's
own counters.
"""

import os

import numpy as np
import torch.distributed as dist
from torchtitan.train import Trainer

import tinytitan.register  # noqa: F401  (the TrainSpec this run still needs)

_forward_backward = Trainer.forward_backward_step


def _recording(self, *, input_dict, labels, **kwargs):
    folder = os.path.join(self.job_config.job.dump_folder, "received")
    os.makedirs(folder, exist_ok=True)
    rank = dist.get_rank() if dist.is_initialized() else 0
    k = self._recorded = getattr(self, "_recorded", 0) + 1
    path = os.path.join(folder, f"rank{rank}-step{self.step}-{k}.npz")
    np.savez(path, inputs=input_dict["input"].cpu().numpy(), labels=labels.cpu().numpy())
    return _forward_backward(self, input_dict=input_dict, labels=labels, **kwargs)


Trainer.forward_backward_step = _recording

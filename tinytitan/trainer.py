"""torchtitan's Trainer with tinytitan's start-up hooks (CPU settings, metrics wiring)."""

from __future__ import annotations

from torchtitan.train import Trainer

from tinytitan import device
from tinytitan.config import resolve_job_paths


class TinyTrainer(Trainer):
    def __init__(self, job_config):
        device.adapt_job_config(job_config)
        resolve_job_paths(job_config)
        super().__init__(job_config)
        self.metrics_processor.dataloader = self.dataloader

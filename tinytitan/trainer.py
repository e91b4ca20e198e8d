"""torchtitan's Trainer with tinytitan's start-up hooks (CPU settings, metrics wiring, in-loop [eval])."""

from __future__ import annotations

from torchtitan.train import Trainer

from tinytitan import device
from tinytitan.config import resolve_job_paths


class TinyTrainer(Trainer):
    def __init__(self, job_config):
        from tinytitan.observe.in_loop import build_in_loop_eval

        device.adapt_job_config(job_config)
        resolve_job_paths(job_config)
        super().__init__(job_config)
        self.metrics_processor.dataloader = self.dataloader
        self.benchmarks = build_in_loop_eval(self)

    def train_step(self, data_iterator):
        super().train_step(data_iterator)
        if self.benchmarks is not None and self.benchmarks.due(self.step):
            self.benchmarks.run(self.model_parts, self.step)

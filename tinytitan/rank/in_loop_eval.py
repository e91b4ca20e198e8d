"""``[eval]``: lm-eval benchmark tasks on the FSDP-sharded training model, every ``freq`` steps.

Every rank runs lm-eval with ``rank``/``world_size`` of the process group: lm-eval deals each
rank its share of the documents (padded to the same count) and gathers the per-document
metrics on rank 0. Splitting, rather than every rank scoring everything, makes an evaluation
``dp`` times faster, and FSDP needs every rank in each forward pass anyway (``TitanLM``
keeps the ranks' forward passes in step). Rank 0 logs ``eval/<task>/<metric>`` and
``eval/time_s`` to TensorBoard and ``metrics.jsonl``.

It cannot change training: the model runs under ``no_grad`` in eval mode (the Llama blocks
have no dropout, so eval mode computes the same), its FSDP parameters are resharded after,
nothing reads the data loader, and the global RNG states (Python, NumPy, torch) are restored.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager

import torch

logger = logging.getLogger("tinytitan.eval")


@contextmanager
def kept_rng_states():
    import numpy as np

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def reshard(model) -> None:
    """Back to sharded parameters: FSDP keeps the root unsharded after a forward (a backward usually
    follows), and the optimizer and checkpoint expect the sharded ones."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def build_in_loop_eval(trainer) -> InLoopEval | None:
    """The trainer's ``[eval]``, or None when it is off (its values were checked by ``validate_job_config``)."""
    from tinytitan.models import FLAVORS
    from tinytitan.observe.harness import require_lm_eval

    job = trainer.job_config
    if not job.eval.tasks:
        return None
    require_lm_eval()
    max_seq_len = FLAVORS[job.model.flavor].max_seq_len
    return InLoopEval(job.eval.task_settings(), job.eval.freq, trainer.tokenizer.loaded, max_seq_len, trainer.device,
                      job.training.steps, trainer.metrics_processor.log_eval)  # fmt: skip


class InLoopEval:
    """Scores the tasks at steps ``freq, 2 freq, ...`` and the last step."""

    def __init__(self, settings, freq: int, tokenizer, max_seq_len: int, device, last_step: int, log_fn):
        self.settings = settings  # tinytitan.observe.task_eval.TaskSettings
        self.freq = freq
        self.tokenizer = tokenizer  # tinytitan.tokenizer.LoadedTokenizer
        self.max_seq_len = max_seq_len
        self.device = device
        self.last_step = last_step
        self.log_fn = log_fn  # (metrics dict, step) -> None, writes on rank 0

    def due(self, step: int) -> bool:
        return step % self.freq == 0 or step == self.last_step

    @torch.no_grad()
    def run(self, model_parts, step: int) -> dict[str, float] | None:
        from tinytitan.observe.curve import scalar_tag
        from tinytitan.observe.harness import titan_lm
        from tinytitan.observe.task_eval import score

        (model,) = model_parts
        start = time.perf_counter()
        model.eval()
        try:
            with kept_rng_states():
                harness = titan_lm(lambda ids: model(ids), self.tokenizer, self.max_seq_len, self.device,
                                   self.settings.batch_size, distributed=True)  # fmt: skip
                scores = score(harness, self.settings)
        finally:
            reshard(model)
            model.train()
        seconds = time.perf_counter() - start
        logger.info("eval at step %d took %.1f s", step, seconds)
        if scores is None:  # not rank 0
            return None
        metrics = {scalar_tag(task, metric): value for task, ms in scores.items() for metric, value in ms.items()}
        metrics["eval/time_s"] = seconds
        self.log_fn(metrics, step)
        logger.info("eval step %d: %s", step, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

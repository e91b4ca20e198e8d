"""The rank's held-out validation: torchtitan's ``Validator`` run once per source over that source's held-out
windows (``tinytitan.data.heldout.heldout_split``, shared with the offline ``tinytitan eval loss``).

``TrainSpec.build_validator_fn`` builds it (``tinytitan.rank.spec``); it logs ``validation/<source>/loss``
and the weighted ``validation/loss``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
from torchtitan.components.validate import Validator

from tinytitan.compat import validator_without_text_loader
from tinytitan.data.config import data_config
from tinytitan.data.encode import Encoder
from tinytitan.data.heldout import heldout_split

logger = logging.getLogger("tinytitan.data")


class WindowBatches:
    """One source's windows of this rank as torchtitan's validator reads a data loader: (inputs, labels)."""

    def __init__(self, windows: torch.Tensor, batch_size: int):
        self.windows, self.batch_size = windows, batch_size

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        for start in range(0, len(self.windows), self.batch_size):
            batch = self.windows[start : start + self.batch_size]
            yield {"input": batch[:, :-1].contiguous()}, batch[:, 1:].contiguous()


class _LossOf:
    """Stands in for the metrics processor during one source's pass: keeps the loss torchtitan's loop
    reports, and counts its tokens on the real processor."""

    def __init__(self, processor):
        self.processor = processor
        self.loss: float | None = None

    @property
    def ntokens_since_last_log(self) -> int:
        return self.processor.ntokens_since_last_log

    @ntokens_since_last_log.setter
    def ntokens_since_last_log(self, value: int) -> None:
        self.processor.ntokens_since_last_log = value

    def log_validation(self, loss, step: int, extra_metrics=None) -> None:
        self.loss = float(loss)


class HeldOutValidator(Validator):
    """torchtitan's Validator (its ``__init__`` and its ``validate`` loop), run once per source over
    that source's held-out windows instead of torchtitan's C4 validation set.

    Built with exactly the arguments torchtitan gives ``TrainSpec.build_validator_fn``.
    """

    def __init__(self, **kwargs):
        with validator_without_text_loader():  # its C4 loader would download; ours come per source
            super().__init__(**kwargs)
        self.dp_rank, self.dp_world_size = kwargs["dp_rank"], kwargs["dp_world_size"]
        self.data = data_config(self.job_config)
        self.encoder = Encoder(self.tokenizer) if self.data.format == "text" else None
        from tinytitan.data.planner import make_plan

        self.plan = make_plan(self.data, self.tokenizer)  # the loader's plan: the files are not listed again
        self.weights = {s.name: s.weight for s in self.plan.sources}
        if not any(cfg.validation_files or cfg.validation_docs for cfg in self.data.sources):
            logger.warning(
                "validation is enabled but no data source has validation_files or validation_docs; "
                "nothing will be validated"
            )
        self._windows: dict[str, torch.Tensor] | None = None

    def windows(self) -> dict[str, torch.Tensor]:
        """This rank's held-out windows per source, built on first use."""
        if self._windows is None:
            v = self.job_config.validation
            split = heldout_split(self.plan, self.data, v.seq_len, self.encoder, ranks=self.dp_world_size,
                                  batch_size=v.local_batch_size, steps=v.steps)  # fmt: skip
            self._windows = {name: w[self.dp_rank :: self.dp_world_size] for name, w in split.items()}
        return self._windows

    def post_dataloading_process(self, input_dict, labels, model_parts):
        """torchtitan's, plus the labels among the model's inputs when the model sums the loss ([loss] chunked)."""
        inputs, labels, extra_inputs, extra_kwargs = super().post_dataloading_process(input_dict, labels, model_parts)
        if getattr(self.loss_fn, "labels_to_model", False):
            extra_inputs = {**extra_inputs, "labels": labels}
        return inputs, labels, extra_inputs, extra_kwargs

    @torch.no_grad()
    def validate(self, model_parts: list[nn.Module], step: int) -> None:
        windows = self.windows()
        if not windows:
            return
        processor, per_source = self.metrics_processor, {}
        batch_size = self.job_config.validation.local_batch_size
        try:
            for name, source_windows in windows.items():
                self.validation_dataloader = WindowBatches(source_windows, batch_size)
                self.metrics_processor = loss = _LossOf(processor)
                super().validate(model_parts, step)  # torchtitan's loop: forward, loss, token counts, all-reduce
                per_source[name] = loss.loss
        finally:
            self.metrics_processor, self.validation_dataloader = processor, None
        total = sum(self.weights[n] for n in per_source)
        overall = sum(per_source[n] * self.weights[n] / total for n in per_source)
        extra: dict[str, Any] = {f"validation/{n}/loss": v for n, v in per_source.items()}
        extra["validation/loss"] = overall
        processor.log_validation(loss=overall, step=step, extra_metrics=extra)
        logger.info("validation step %d: %s", step, "  ".join(f"{n} {v:.4f}" for n, v in per_source.items()))

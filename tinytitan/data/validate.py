"""Validation on a held-out split of every source, reported per source.

Held-out data per source (docs/data.md):

* ``validation_files = "validation/chunk*/*.jsonl.zst"``: separate files inside the
  source's path (SlimPajama ships them);
* ``validation_docs = N``: the first N documents of the source's first training file
  (sorted order); training never reads them (Starcoderdata has no held-out files).

Held-out documents are packed like training data (BOS ... EOS, ``validation.seq_len + 1``
windows) once, kept in memory, and dealt to dp ranks round-robin. Every validation run
evaluates ``validation.steps`` batches of ``validation.local_batch_size`` per rank and
source (fewer when the split is smaller; -1: all of it) and logs
``validation/<source>/loss`` and ``validation/loss`` (the mixture-weighted mean).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torchtitan.components.loss import IGNORE_INDEX
from torchtitan.components.validate import BaseValidator, Validator
from torchtitan.distributed import utils as dist_utils
from torchtitan.tools import utils as tt_utils

from tinytitan.data.config import Data, data_config
from tinytitan.data.encode import Encoder
from tinytitan.data.files import Filter, Opener, ReadError, file_info, iter_file
from tinytitan.data.listing import hub_repo, list_files
from tinytitan.data.plan import SourcePlan

logger = logging.getLogger("tinytitan.data")


def _text_docs(src: SourcePlan, validation_files: str) -> Iterator[str]:
    filt = Filter(src.text_field, src.exclude)
    if validation_files:
        opener = Opener(src.path, hub_repo(src.path))
        for rel in list_files(src.path, validation_files):
            try:
                for _, _, text in iter_file(opener, file_info(opener, rel), filt):
                    if text and not text.isspace():
                        yield text
            except ReadError as e:
                logger.warning("validation: skipping unreadable file %s", e)
        return
    info = src.files[0]
    raw = 0
    try:
        for _, _, text in iter_file(src.opener, info, filt):
            if raw >= src.holdout_docs:
                return
            raw += 1
            if text and not text.isspace():
                yield text
    except ReadError as e:
        logger.warning("validation: skipping unreadable file %s", e)


def _token_chunks_text(src: SourcePlan, validation_files: str, encoder: Encoder, limit: int) -> Iterator[np.ndarray]:
    batch: list[str] = []
    size = total = 0
    for text in _text_docs(src, validation_files):
        batch.append(text)
        size += len(text)
        if size >= 1 << 20:
            tokens, _ = encoder.encode_docs(batch)
            total += tokens.size
            yield tokens
            batch, size = [], 0
            if total >= limit:
                return
    if batch:
        yield encoder.encode_docs(batch)[0]


def _token_chunks_prepared(src: SourcePlan, validation_files: str, prepared_dir: str) -> Iterator[np.ndarray]:
    from tinytitan.data.shards import Shard, load_manifest, shard_base

    if validation_files:
        for rec in load_manifest(prepared_dir).sources[src.name].validation_files:
            sh = Shard(shard_base(prepared_dir, src.name, rec.rel, validation=True))
            yield np.asarray(sh.tokens)
        return
    sh = Shard(shard_base(prepared_dir, src.name, src.files[0].rel))
    groups = src.files[0].row_groups or ()
    before = np.concatenate(([0], np.cumsum(groups)))[sh.seg] if groups else np.zeros_like(sh.raw)
    keep = np.flatnonzero(before + sh.raw < src.holdout_docs)
    if keep.size:
        yield np.concatenate([sh.tokens[sh.starts[i] : sh.starts[i + 1]] for i in keep.tolist()])


def heldout_windows(
    src: SourcePlan, source_cfg, data: Data, seq_len: int, encoder: Encoder | None, max_windows: int | None
) -> torch.Tensor:
    """All held-out windows of a source (at most max_windows): LongTensor[n, seq_len + 1]."""
    need = seq_len + 1
    limit = max_windows * need if max_windows else 1 << 62
    if data.format == "tokens":
        chunks = _token_chunks_prepared(src, source_cfg.validation_files, data.prepared_dir)
    else:
        chunks = _token_chunks_text(src, source_cfg.validation_files, encoder, limit)
    parts, total = [], 0
    for c in chunks:
        parts.append(c)
        total += c.size
        if total >= limit:
            break
    if not parts:
        return torch.empty(0, need, dtype=torch.long)
    flat = np.concatenate(parts)
    n = flat.size // need
    if max_windows:
        n = min(n, max_windows)
    return torch.from_numpy(flat[: n * need].astype(np.int64).reshape(n, need))


class MixtureValidator(Validator):
    """torchtitan's Validator, fed per source from the held-out splits of the mixture."""

    def __init__(
        self,
        job_config,
        dp_world_size: int,
        dp_rank: int,
        tokenizer,
        parallel_dims,
        loss_fn,
        validation_context,
        maybe_enable_amp: AbstractContextManager[None],
        metrics_processor,
        pp_schedule=None,
        pp_has_first_stage: bool | None = None,
        pp_has_last_stage: bool | None = None,
    ):
        BaseValidator.__init__(self, job_config)
        self.tokenizer = tokenizer
        self.parallel_dims = parallel_dims
        self.loss_fn = loss_fn
        self.validation_context = validation_context
        self.maybe_enable_amp = maybe_enable_amp
        self.metrics_processor = metrics_processor
        self.pp_schedule = pp_schedule
        self.pp_has_first_stage = pp_has_first_stage
        self.pp_has_last_stage = pp_has_last_stage
        self.dp_rank, self.dp_world_size = dp_rank, dp_world_size
        self.data = data_config(job_config)
        v = job_config.validation
        self.batch_size, self.seq_len, self.steps = v.local_batch_size, v.seq_len, v.steps
        self.encoder = Encoder(tokenizer) if self.data.format == "text" else None
        from tinytitan.data.planner import make_plan

        self.plan = make_plan(self.data, tokenizer)  # the loader's plan: the files are not listed again
        self.sources = [
            (src, cfg)
            for src, cfg in zip(self.plan.sources, self.data.sources, strict=True)
            if cfg.validation_files or cfg.validation_docs
        ]
        if not self.sources:
            logger.warning(
                "validation is enabled but no data source has validation_files or validation_docs; "
                "nothing will be validated"
            )
        self._windows: dict[str, torch.Tensor] | None = None

    def windows(self) -> dict[str, torch.Tensor]:
        """This rank's held-out windows per source, built on first use."""
        if self._windows is None:
            per_step = self.dp_world_size * self.batch_size
            cap = self.steps * per_step if self.steps > 0 else None
            self._windows = {}
            for src, cfg in self.sources:
                w = heldout_windows(src, cfg, self.data, self.seq_len, self.encoder, cap)
                steps = len(w) // per_step
                if steps == 0:
                    logger.warning(
                        "validation: source %r has %d held-out windows of %d tokens, fewer than one batch "
                        "over %d ranks; it is not validated",
                        src.name,
                        len(w),
                        self.seq_len + 1,
                        self.dp_world_size,
                    )
                    continue
                self._windows[src.name] = w[: steps * per_step][self.dp_rank :: self.dp_world_size]
        return self._windows

    def _loss(self, model_parts: list[nn.Module], windows: torch.Tensor) -> torch.Tensor:
        device_type = tt_utils.device_type
        parallel_dims = self.parallel_dims
        losses = []
        for i in range(0, len(windows), self.batch_size):
            batch = windows[i : i + self.batch_size]
            input_dict = {"input": batch[:, :-1].contiguous().to(device_type)}
            labels = batch[:, 1:].contiguous().to(device_type)
            self.metrics_processor.ntokens_since_last_log += labels.numel()
            inputs, labels, extra_inputs, extra_kwargs = self.post_dataloading_process(input_dict, labels, model_parts)
            valid = (labels != IGNORE_INDEX).sum().to(torch.int64)
            if parallel_dims.dp_enabled:
                valid = dist_utils.dist_sum(valid, parallel_dims.get_mesh("batch"), None)
            if parallel_dims.pp_enabled:
                with self.validation_context():
                    targets, pp_losses = (labels, []) if self.pp_has_last_stage else (None, None)
                    if self.pp_has_first_stage:
                        self.pp_schedule.eval(inputs, **extra_inputs, **extra_kwargs, target=targets, losses=pp_losses)
                    else:
                        self.pp_schedule.eval(**extra_kwargs, target=targets, losses=pp_losses)
                loss_sum = (
                    torch.sum(torch.stack(pp_losses)).to(device_type)
                    if self.pp_has_last_stage
                    else torch.tensor([-1.0], device=device_type)
                )
            else:
                if getattr(self.loss_fn, "labels_to_model", False):  # [loss] kind = "chunked": the model sums it
                    extra_inputs = {**extra_inputs, "labels": labels}
                with self.validation_context(), self.maybe_enable_amp:
                    loss_sum = self.loss_fn(model_parts[0](inputs, **extra_inputs, **extra_kwargs), labels)
            losses.append(loss_sum.detach() / valid)
        loss = torch.sum(torch.stack(losses)) / len(losses)
        if parallel_dims.dp_cp_enabled:
            return dist_utils.dist_sum(loss, parallel_dims.get_optional_mesh("loss"))
        return loss.item()

    @torch.no_grad()
    def validate(self, model_parts: list[nn.Module], step: int) -> None:
        windows = self.windows()
        if not windows:
            return
        for model in model_parts:
            model.eval()
        per_source: dict[str, float] = {}
        try:
            for src, _ in self.sources:
                if src.name in windows:
                    per_source[src.name] = float(self._loss(model_parts, windows[src.name]))
        finally:
            for model in model_parts:
                model.train()
        weights = {s.name: s.weight for s, _ in self.sources if s.name in per_source}
        total = sum(weights.values())
        overall = sum(per_source[n] * w / total for n, w in weights.items())
        extra: dict[str, Any] = {f"validation/{n}/loss": v for n, v in per_source.items()}
        extra["validation/loss"] = overall
        self.metrics_processor.log_validation(loss=overall, step=step, extra_metrics=extra)
        logger.info(
            "validation step %d: %s",
            step,
            "  ".join(f"{n} {v:.4f}" for n, v in per_source.items()),
        )


def build_validator(
    job_config,
    dp_world_size: int,
    dp_rank: int,
    tokenizer,
    parallel_dims,
    loss_fn,
    validation_context,
    maybe_enable_amp: AbstractContextManager[None],
    metrics_processor=None,
    pp_schedule=None,
    pp_has_first_stage: bool | None = None,
    pp_has_last_stage: bool | None = None,
) -> BaseValidator:
    """TrainSpec.build_validator_fn: per-source validation on the held-out splits."""
    if metrics_processor is None:
        raise ValueError("build_validator needs the metrics processor")
    return MixtureValidator(
        job_config=job_config,
        dp_world_size=dp_world_size,
        dp_rank=dp_rank,
        tokenizer=tokenizer,
        parallel_dims=parallel_dims,
        loss_fn=loss_fn,
        validation_context=validation_context,
        maybe_enable_amp=maybe_enable_amp,
        metrics_processor=metrics_processor,
        pp_schedule=pp_schedule,
        pp_has_first_stage=pp_has_first_stage,
        pp_has_last_stage=pp_has_last_stage,
    )

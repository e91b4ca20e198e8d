"""Held-out loss on a split of every source, per source, through torchtitan's own validator.

Held-out data per source (docs/data.md):

* ``validation_files = "validation/chunk*/*.jsonl.zst"``: separate files inside the
  source's path (SlimPajama ships them);
* ``validation_docs = N``: the first N documents of the source's first training file
  (sorted order); training never reads them (Starcoderdata has no held-out files).

Held-out documents are packed like training data (BOS ... EOS, ``validation.seq_len + 1``
windows) once, kept in memory, and dealt to dp ranks round-robin (``heldout_split``: also what
``tinytitan eval loss`` scores, so it reproduces these losses). Every validation runs
torchtitan's ``Validator.validate`` loop once per source, over ``validation.steps`` batches of
``validation.local_batch_size`` per rank (fewer when the split is smaller; -1: all of it), and
logs ``validation/<source>/loss`` and ``validation/loss`` (the mixture-weighted mean).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torchtitan.components.validate import Validator

from tinytitan.compat import validator_without_text_loader
from tinytitan.data.config import Data, data_config
from tinytitan.data.encode import Encoder
from tinytitan.data.files import Filter, Opener, ReadError, file_info, iter_file
from tinytitan.data.listing import hub_repo, list_files
from tinytitan.data.plan import MixturePlan, SourcePlan

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
    from tinytitan.data.shard_reader import Shard
    from tinytitan.data.shards import load_manifest, shard_base

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


def heldout_split(
    plan: MixturePlan, data: Data, seq_len: int, encoder: Encoder | None, *, ranks: int, batch_size: int, steps: int
) -> dict[str, torch.Tensor]:
    """Every source's validation windows, all ranks' together, as the validator uses them.

    At most ``steps`` batches of ``batch_size`` windows per rank (all with ``steps = -1``), cut to
    whole batches of every rank: rank ``r`` of ``ranks`` validates ``windows[r::ranks]``. A source
    with fewer windows than one batch of every rank is left out (with a warning).
    """
    per_step = ranks * batch_size
    cap = steps * per_step if steps > 0 else None
    split = {}
    for src, cfg in zip(plan.sources, data.sources, strict=True):
        if not (cfg.validation_files or cfg.validation_docs):
            continue
        windows = heldout_windows(src, cfg, data, seq_len, encoder, cap)
        if len(windows) < per_step:
            logger.warning(
                "validation: source %r has %d held-out windows of %d tokens, fewer than one batch of %d "
                "over %d ranks; it is not validated", src.name, len(windows), seq_len + 1, batch_size, ranks,
            )  # fmt: skip
            continue
        split[src.name] = windows[: len(windows) // per_step * per_step]
    return split


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

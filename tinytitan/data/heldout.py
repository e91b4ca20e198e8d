"""Held-out data per source, split as the rank's validator (``tinytitan.rank.validator``) and ``tinytitan eval loss`` read it.

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

import numpy as np
import torch

from tinytitan.data.config import Data
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

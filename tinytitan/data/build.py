"""``TrainSpec.build_dataloader_fn``: the ``[data]`` mixture's loader for one dp rank (``build_dataloader``),
and the report of every live loader at exit (skipped unreadable files; workers closed)."""

from __future__ import annotations

import atexit
import logging
import time
import weakref

from tinytitan.data.config import Data, data_config
from tinytitan.data.encode import Encoder
from tinytitan.data.loader import MixtureDataLoader
from tinytitan.data.planner import make_plan
from tinytitan.data.stages import sequences_per_step, stage_spans
from tinytitan.data.workers import BackendSpec
from tinytitan.errors import TinytitanError

logger = logging.getLogger("tinytitan.data")

_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _report_at_exit() -> None:
    for loader in list(_LIVE):
        try:
            files = loader.skipped_files()
            if files:
                logger.warning(
                    "data: %d unreadable file(s) were skipped on dp rank %d: %s",
                    len(files),
                    loader.dp_rank,
                    "; ".join(files),
                )
            loader.close()
        except Exception as e:  # at exit: report, and go on closing the others
            logger.warning("data: closing the loader of dp rank %d at exit failed: %r", loader.dp_rank, e)


# ---------------------------------------------------------- builders


def backend_spec(data: Data, tokenizer) -> BackendSpec:
    if data.format == "tokens":
        return BackendSpec("tokens", prepared_dir=data.prepared_dir)
    if tokenizer is None:
        raise TinytitanError("data.format = 'text' needs a tokenizer; set model.hf_assets_path to a tokenizer folder")
    return BackendSpec("text", encoder=Encoder(tokenizer), budget=data.encode_batch_bytes)


def build_dataloader(*, dp_world_size: int, dp_rank: int, tokenizer, job_config, **kwargs) -> MixtureDataLoader:
    """TrainSpec.build_dataloader_fn: the [data] mixture for this dp rank."""
    data = data_config(job_config)
    training = job_config.training
    dl = training.dataloader
    plan = make_plan(data, tokenizer)
    started = time.perf_counter()
    windows_per_step = sequences_per_step(training, dp_world_size)
    spans = stage_spans(data, training.steps, windows_per_step * training.seq_len)
    loader = MixtureDataLoader(
        plan,
        backend_spec(data, tokenizer),
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        batch_size=training.local_batch_size,
        seq_len=training.seq_len,
        num_workers=dl.num_workers,
        prefetch_factor=dl.prefetch_factor,
        pin_memory=dl.pin_memory,
        stages=spans,
        windows_per_step=windows_per_step,
        allow_stage_change=data.allow_stage_change,
    )
    logger.info(
        "data: %s format, %s, %d lanes per source, %d readers, planned in %.2fs",
        data.format,
        ", ".join(
            f"{s.name}{'' if data.stages else f' {s.weight:.3f}'} ({len(s.files)} files, {len(s.parts)} parts)"
            for s in plan.sources
        ),
        plan.lanes,
        loader.n_readers,
        time.perf_counter() - started,
    )
    _LIVE.add(loader)
    if data.stages:
        logger.info(
            "data: %d stages: %s", len(spans), "; ".join(f"{st.name!r} {st.describe()}" for st in loader.stages)
        )
    return loader

"""The ``tinytitan_bench`` TrainSpec: tinytitan's spec with synthetic tokens, for timing.

A benchmark must measure the model, not the data: this spec keeps everything
of ``tinytitan`` (model, parallelisation, optimizer, metrics) and swaps only the
data loader for one that cycles through a few pre-made random batches, so a
step never waits on reading or tokenizing. The tokenizer is the embedded one
(``--model.hf_assets_path``, set by ``tinytitan.bench.run``): only its EOS id is
used, to cut the random tokens into documents of ``MEAN_DOC_TOKENS`` on average
(exponentially distributed lengths), which a ``block_causal`` mask splits on.

The training processes import this module through
``--experimental.custom_import tinytitan.bench.synthetic``.

Its metrics processor also copies torchtitan's own per-log numbers (MFU,
memory peaks, step time, data-loading share) into each ``metrics.jsonl`` row,
so the benchmark reads exactly what torchtitan measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
from torchtitan.components.dataloader import BaseDataLoader
from torchtitan.protocols.train_spec import register_train_spec

from tinytitan.compat import spec_registered
from tinytitan.models import FLAVORS
from tinytitan.rank.spec import train_spec

SPEC_NAME = "tinytitan_bench"
DISTINCT_BATCHES = 4  # enough that no step sees the previous step's tokens; cheap to hold
MEAN_DOC_TOKENS = 1024  # a document's mean length in tokens: about a web page's (SlimPajama) in Llama 3 tokens


class SyntheticTokens(BaseDataLoader):
    """Endless uniform random token batches, different per data-parallel rank."""

    def __init__(
        self, vocab_size: int, local_batch_size: int, seq_len: int, dp_rank: int, seed: int = 0, eos_id: int = -1
    ):
        generator = torch.Generator().manual_seed(seed * 1009 + dp_rank)
        # seq_len + 1 tokens per row: inputs and next-token labels, as the real loader gives them.
        self._rows = [
            torch.randint(0, vocab_size, (local_batch_size, seq_len + 1), generator=generator)
            for _ in range(DISTINCT_BATCHES)
        ]
        if 0 <= eos_id < vocab_size:  # documents: an EOS where one ends, as the real loader packs them
            for rows in self._rows:
                rows[rows == eos_id] = (eos_id + 1) % vocab_size
                ends = torch.rand(rows.shape, generator=generator) < 1.0 / MEAN_DOC_TOKENS
                rows[ends] = eos_id
        self._step = 0

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        while True:
            rows = self._rows[self._step % DISTINCT_BATCHES]
            self._step += 1
            yield {"input": rows[:, :-1]}, rows[:, 1:]

    def state_dict(self) -> dict:
        return {"step": self._step}

    def load_state_dict(self, state_dict: dict) -> None:
        self._step = state_dict["step"]


def build_synthetic_dataloader(dp_world_size: int, dp_rank: int, tokenizer, job_config) -> SyntheticTokens:
    return SyntheticTokens(
        vocab_size=FLAVORS[job_config.model.flavor].vocab_size,
        local_batch_size=job_config.training.local_batch_size,
        seq_len=job_config.training.seq_len,
        dp_rank=dp_rank,
        seed=job_config.debug.seed or 0,
        eos_id=tokenizer.eos_id if tokenizer is not None else -1,
    )


def bench_train_spec():
    return dataclasses.replace(
        train_spec(),
        build_dataloader_fn=build_synthetic_dataloader,
        build_validator_fn=None,
    )


if not spec_registered(SPEC_NAME):
    register_train_spec(SPEC_NAME, bench_train_spec())

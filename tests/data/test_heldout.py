"""Held-out splits and the per-source validator."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torchtitan.components.loss import build_cross_entropy_loss
from torchtitan.distributed import ParallelDims

from tests.data.fixtures import ID_BASE, doc_ids, job_config, loader, mark_holdout, sources, tokenizer
from tinytitan.data.prepare import prepare
from tinytitan.rank.validator import HeldOutValidator


def holdout_sources(corpus, n=12):
    srcs = sources(corpus)
    srcs[1]["validation_docs"] = n
    return srcs


def test_validation_docs_are_never_trained_on(corpus):
    srcs = holdout_sources(corpus)
    dl = loader(corpus, batch=8, seq_len=64, source_list=srcs)
    it = iter(dl)
    seen = set()
    for _ in range(150):  # several passes over starcoderdata
        seen.update(doc_ids(next(it)[0]["input"]))
    first = sorted(d.id for d in corpus.docs.values() if d.file == "python/train-00000-of-00002.parquet")
    held = set(first[:12])
    assert not seen & held
    assert set(first[12:]) <= seen


class ToyModel(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 16)
        self.out = torch.nn.Linear(16, vocab)

    def forward(self, tokens):
        return self.out(self.emb(tokens))

    def get_attention_masks(self, *args, **kwargs):
        raise TypeError("no masks")


class Metrics:
    def __init__(self):
        self.ntokens_since_last_log = 0
        self.logged = []

    def log_validation(self, loss, step, extra_metrics=None):
        self.logged.append((step, loss, extra_metrics))


def _validator(jc, corpus):
    from tinytitan.rank import device

    device.activate()  # torchtitan on the CPU, as in training without a GPU
    metrics = Metrics()
    dims = ParallelDims(dp_replicate=1, dp_shard=1, cp=1, tp=1, pp=1, ep=1, etp=1, world_size=1)
    v = HeldOutValidator(
        job_config=jc,
        dp_world_size=1,
        dp_rank=0,
        tokenizer=tokenizer(corpus),
        parallel_dims=dims,
        loss_fn=build_cross_entropy_loss(type("J", (), {"compile": type("C", (), {"enable": False})()})()),
        validation_context=contextlib.nullcontext,
        maybe_enable_amp=contextlib.nullcontext(),
        metrics_processor=metrics,
    )
    return v, metrics


@pytest.mark.parametrize("fmt", ["text", "tokens"])
def test_validator_reports_every_source(corpus, tmp_path, fmt):
    srcs = holdout_sources(corpus)
    overrides = {}
    if fmt == "tokens":
        prepare(job_config(corpus, source_list=srcs).data, tokenizer(corpus), str(tmp_path), progress=False)
        overrides = {"format": "tokens", "prepared_dir": str(tmp_path)}
    jc = job_config(corpus, batch=2, seq_len=32, source_list=srcs, data_overrides=overrides)
    v, metrics = _validator(jc, corpus)
    windows = v.windows()
    assert set(windows) == {"slimpajama", "starcoderdata"}
    # slimpajama's held-out file, starcoderdata's first 12 documents
    sp_ids = set(doc_ids(windows["slimpajama"]))
    assert sp_ids and all(corpus.docs[i].holdout for i in sp_ids)
    first = sorted(d.id for d in corpus.docs.values() if d.file == "python/train-00000-of-00002.parquet")
    assert set(doc_ids(windows["starcoderdata"])) <= set(first[:12])
    torch.manual_seed(0)
    model = ToyModel(ID_BASE + len(corpus.docs) + 1)
    v.validate([model], step=5)
    step, loss, extra = metrics.logged[-1]
    assert step == 5 and set(extra) == {
        "validation/slimpajama/loss",
        "validation/starcoderdata/loss",
        "validation/loss",
    }
    assert extra["validation/loss"] == pytest.approx(
        0.7 * extra["validation/slimpajama/loss"] + 0.3 * extra["validation/starcoderdata/loss"]
    )
    assert loss == extra["validation/loss"] and loss > 0 and model.training
    assert metrics.ntokens_since_last_log == 2 * 2 * 2 * 32  # 2 steps x 2 sources x batch 2 x 32


def test_mark_holdout_helper_matches(corpus):
    # the fixture helper used by other suites agrees with validation_docs
    import copy

    c = copy.deepcopy(corpus)
    mark_holdout(c, "starcoderdata", "python/train-00000-of-00002.parquet", 12)
    assert sum(d.holdout for d in c.docs.values() if d.source == "starcoderdata") == 12

"""The streaming loader: packing, mixture, filters, errors, exact resume (in one process)."""

from __future__ import annotations

import collections

import pytest
import torch

from tests.data.fixtures import BOS, EOS, ID_BASE, doc_ids, loader, row_sources
from tinytitan.errors import TinytitanError


def take(dl, n):
    it = iter(dl)
    return [next(it) for _ in range(n)]


def test_batches_are_shifted_windows(corpus):
    dl = loader(corpus, batch=4, seq_len=64)
    for inputs, labels in take(dl, 5):
        x = inputs["input"]
        assert x.shape == (4, 64) and labels.shape == (4, 64)
        assert x.dtype == torch.long and labels.dtype == torch.long
        assert torch.equal(x[:, 1:], labels[:, :-1])


def test_documents_are_bos_eos_delimited_and_never_padded(corpus):
    dl = loader(corpus, batch=8, seq_len=64)
    for inputs, labels in take(dl, 20):
        full = torch.cat([inputs["input"], labels[:, -1:]], dim=1)
        for row in full.tolist():
            for a, b in zip(row, row[1:], strict=False):
                if a == EOS:
                    assert b == BOS  # documents follow each other directly, no filler
                if b >= ID_BASE:
                    assert a == BOS  # every document starts with BOS, then its first word
                if a == BOS:
                    assert b >= ID_BASE
            assert 2 not in row  # no unknown/filler token


def test_exclude_filter_and_empty_documents(corpus):
    dl = loader(corpus, batch=8, seq_len=64)
    seen = set()
    for inputs, _labels in take(dl, 60):
        seen.update(doc_ids(inputs["input"]))
    github = {d.id for d in corpus.docs.values() if d.set_name == "RedPajamaGithub"}
    assert seen and not seen & github
    stats = dl.stats()
    assert stats["docs_excluded/slimpajama"] > 0
    assert stats["docs_skipped/slimpajama"] >= 1  # the empty document
    assert stats["docs_excluded/starcoderdata"] == 0


def test_corrupt_file_is_skipped_counted_and_named(corpus, caplog):
    dl = loader(corpus, batch=8, seq_len=64)
    with caplog.at_level("WARNING", logger="tinytitan.data"):
        take(dl, 60)  # more than one pass over slimpajama
    assert dl.stats()["files_skipped"] >= 1
    assert any(corpus.corrupt_file in f for f in dl.skipped_files())
    assert corpus.corrupt_file in caplog.text


def test_corrupt_file_fails_with_on_error_fail(corpus):
    dl = loader(corpus, batch=8, seq_len=64, data_overrides={"on_error": "fail"})
    with pytest.raises(TinytitanError, match="example_train_1.jsonl.zst"):
        take(dl, 60)


def test_exact_resume_same_world_size(corpus):
    """state_dict() -> load_state_dict() as a checkpoint does (2 ranks through DCP: test_distributed.py)."""
    n = 12
    kw = dict(batch=4, seq_len=48)
    ref = loader(corpus, **kw)
    ref_batches = take(ref, 2 * n)
    first = loader(corpus, **kw)
    take(first, n)
    resumed = loader(corpus, **kw)
    resumed.load_state_dict(first.state_dict())
    for (a_in, a_lab), (b_in, b_lab) in zip(ref_batches[n:], take(resumed, n), strict=True):
        assert torch.equal(a_in["input"], b_in["input"])
        assert torch.equal(a_lab, b_lab)
    assert resumed.stats() == ref.stats()


def test_token_proportions_follow_weights(corpus):
    # starcoderdata documents are ~4x longer than slimpajama's: weights must hold for tokens.
    # Counted from the tokens the model receives, each row attributed by its document ids.
    dl = loader(corpus, batch=16, seq_len=256)
    tokens = collections.Counter()
    for inputs, _labels in take(dl, 250):
        for source in row_sources(corpus, inputs["input"]):
            tokens[source] += inputs["input"].shape[1]
    total = sum(tokens.values())
    assert total == 250 * 16 * 256
    assert abs(tokens["slimpajama"] / total - 0.7) < 0.01
    assert abs(tokens["starcoderdata"] / total - 0.3) < 0.01
    counters = dl.stats()  # the loader's own counters agree with what was received
    assert counters["tokens/slimpajama"] == tokens["slimpajama"]


def test_a_source_without_usable_documents_is_an_error(corpus):
    from tests.data.fixtures import sources

    srcs = sources(corpus)
    srcs[1]["text_field"] = "no_such_column"  # every starcoderdata file lacks it
    dl = loader(corpus, batch=4, seq_len=64, source_list=srcs)
    with pytest.raises(TinytitanError, match="'starcoderdata'.*no tokens"):
        take(dl, 20)


def test_tiny_documents_fill_windows_across_passes(corpus):
    # windows much longer than a lane's share of a pass still fill, over several passes
    dl = loader(corpus, batch=1, seq_len=4000, data_overrides={"lanes": 8})
    inputs, _ = take(dl, 3)[-1]
    assert inputs["input"].shape == (1, 4000)
    assert dl.stats()["passes/slimpajama"] >= 1


def test_resuming_with_changed_weights_warns_once_and_continues(corpus, caplog):
    from tests.data.fixtures import sources

    first = loader(corpus, batch=4, seq_len=64)
    take(first, 5)
    state = first.state_dict()
    same = loader(corpus, batch=4, seq_len=64)
    with caplog.at_level("WARNING", logger="tinytitan.data"):
        same.load_state_dict(state)
    assert "weights changed" not in caplog.text
    changed = loader(corpus, batch=4, seq_len=64, source_list=sources(corpus, sp_weight=0.5, sc_weight=0.5))
    with caplog.at_level("WARNING", logger="tinytitan.data"):
        changed.load_state_dict(state)
    warnings = [r.getMessage() for r in caplog.records if "weights changed" in r.getMessage()]
    assert len(warnings) == 1
    assert "slimpajama 0.7000 -> 0.5000" in warnings[0] and "starcoderdata 0.3000 -> 0.5000" in warnings[0]
    assert len(take(changed, 3)) == 3  # the stream continues


def test_the_loader_and_the_validator_share_one_plan(corpus):
    from tests.data.fixtures import job_config
    from tinytitan.data.planner import make_plan

    data = job_config(corpus).data
    assert make_plan(data) is make_plan(data)  # listed once per process
    other = job_config(corpus, data_overrides={"seed": 9}).data
    assert make_plan(other) is not make_plan(data)

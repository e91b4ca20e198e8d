"""The loader's checkpoint document: every refusal to resume, each with its one line."""

from __future__ import annotations

import json

import pytest

from tests.data.fixtures import loader, make_corpus, sources
from tinytitan.data.loader_state import STATE_KEY, STATE_VERSION
from tinytitan.data.planner import forget_plans
from tinytitan.errors import TinytitanError


def saved_state(corpus, **kw):
    first = loader(corpus, batch=4, seq_len=64, **kw)
    it = iter(first)
    for _ in range(3):
        next(it)
    return first.state_dict()


def test_the_same_config_resumes(corpus):
    state = saved_state(corpus)
    doc = json.loads(state[STATE_KEY])
    assert doc["version"] == STATE_VERSION and doc["windows"] == 12  # 3 batches of 4 windows
    loader(corpus, batch=4, seq_len=64).load_state_dict(state)


def test_another_loaders_state_is_refused(corpus):
    with pytest.raises(TinytitanError, match="not tinytitan's data loader state.*exclude_from_loading dataloader"):
        loader(corpus).load_state_dict({"sample_idx": 7})


def test_another_state_version_is_refused_naming_it(corpus):
    doc = json.loads(saved_state(corpus)[STATE_KEY])
    doc["version"] = 99
    with pytest.raises(TinytitanError, match=f"data loader state version 99 is not {STATE_VERSION}"):
        loader(corpus).load_state_dict({STATE_KEY: json.dumps(doc)})


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(data_overrides={"seed": 7}), r"data.seed changed since the checkpoint \(1234 -> 7\)"),
        (dict(data_overrides={"lanes": 16}), r"data.lanes changed since the checkpoint \(8 -> 16\)"),
        (
            "drop_source",
            r"data sources changed since the checkpoint \(\['slimpajama', 'starcoderdata'\] -> \['slimpajama'\]\)",
        ),
        ("filter", r"data source 'slimpajama': its files, filter or held-out split changed"),
        ("split", r"data source 'starcoderdata': its files, filter or held-out split changed"),
    ],
    ids=["seed", "lanes", "sources", "filter", "held-out split"],
)
def test_a_stream_that_cannot_continue_is_refused(corpus, change, message):
    state = saved_state(corpus)
    if change == "drop_source":
        kw = dict(source_list=sources(corpus)[:1])
    elif change == "filter":
        srcs = sources(corpus)
        srcs[0]["exclude"] = {}
        kw = dict(source_list=srcs)
    elif change == "split":
        srcs = sources(corpus)
        srcs[1]["validation_docs"] = 5
        kw = dict(source_list=srcs)
    else:
        kw = change
    with pytest.raises(TinytitanError, match=message) as e:
        loader(corpus, batch=4, seq_len=64, **kw).load_state_dict(state)
    assert "exclude_from_loading dataloader" in str(e.value)


def test_changed_files_are_refused(tmp_path):
    corpus = make_corpus(tmp_path)  # changed below: not the shared session corpus
    state = saved_state(corpus)
    extra = corpus.starcoderdata / "python" / "train-00002-of-00002.parquet"
    extra.write_bytes((corpus.starcoderdata / "python" / "train-00000-of-00002.parquet").read_bytes())
    forget_plans()  # the resumed run is a new process: it lists the files again
    with pytest.raises(TinytitanError, match="'starcoderdata': its files, filter or held-out split changed"):
        loader(corpus, batch=4, seq_len=64).load_state_dict(state)

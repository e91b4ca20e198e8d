"""The loader's checkpoint document: every refusal to resume, each with its one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.data.fixtures import loader, make_corpus, sources
from tests.helpers import REPO
from tinytitan.data.loader_state import LANE_FIELDS, STATE_KEY, STATE_VERSION
from tinytitan.errors import TinytitanError


def saved_state(corpus, **kw):
    first = loader(corpus, batch=4, seq_len=64, **kw)
    it = iter(first)
    for _ in range(3):
        next(it)
    return first.state_dict()


def next_batches(dl, n=3):
    it = iter(dl)
    return [next(it)[0]["input"] for _ in range(n)]


def as_version_2(doc: dict) -> dict:
    """The same state of a run without stages in the format of version 2 (no stages, no tokens per stage)."""
    assert doc["stages"] == [] and doc["stage_tokens"] == {}
    return {**{k: v for k, v in doc.items() if k not in ("stages", "stage_tokens")}, "version": 2}


def as_version_1(doc: dict) -> dict:
    """The same state in the format checkpoints had until 2026-12-02: a lane as 13 integers."""
    doc = as_version_2(doc)
    lanes = {name: {lid: [st[f] for f in LANE_FIELDS] for lid, st in ls.items()} for name, ls in doc["lanes"].items()}
    v1 = {k: v for k, v in doc.items() if k != "unreadable"}
    return {**v1, "version": 1, "lanes": lanes, "errors": doc["unreadable"]}


def test_the_state_is_a_versioned_document_with_named_fields(corpus):
    doc = json.loads(saved_state(corpus)[STATE_KEY])
    assert doc["version"] == STATE_VERSION == 3 and doc["windows"] == 12  # 3 batches of 4 windows
    assert doc["stages"] == [] and doc["stage_tokens"] == {}  # a run without [[data.stages]]
    assert doc["layout"] == {"dp_world_size": 1, "workers": 1, "batch_size": 4, "seq_len": 64}
    lane = doc["lanes"]["slimpajama"]["0"]
    assert sorted(lane) == sorted(LANE_FIELDS) and lane["tokens"] > 0 and lane["docs"] > 0


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_checkpoint_resumes_exactly_as_today(corpus, version):
    state = saved_state(corpus)
    as_old = {1: as_version_1, 2: as_version_2}[version]
    v1 = {STATE_KEY: json.dumps(as_old(json.loads(state[STATE_KEY])))}
    today, old = loader(corpus, batch=4, seq_len=64), loader(corpus, batch=4, seq_len=64)
    today.load_state_dict(state)
    old.load_state_dict(v1)
    for a, b in zip(next_batches(today), next_batches(old), strict=True):
        assert torch.equal(a, b)
    assert today.stats() == old.stats() and today.stats()["tokens/slimpajama"] > 0
    assert json.loads(old.state_dict()[STATE_KEY])["version"] == STATE_VERSION  # saved again: upgraded


def test_a_damaged_version_1_lane_is_refused(corpus):
    doc = as_version_1(json.loads(saved_state(corpus)[STATE_KEY]))
    doc["lanes"]["slimpajama"]["0"] = doc["lanes"]["slimpajama"]["0"][:8]
    with pytest.raises(TinytitanError, match="lane 0 of 'slimpajama' has 8 fields, not 13.*exclude_from_loading"):
        loader(corpus).load_state_dict({STATE_KEY: json.dumps(doc)})


def test_another_loaders_state_is_refused(corpus):
    with pytest.raises(TinytitanError, match="not tinytitan's data loader state.*exclude_from_loading dataloader"):
        loader(corpus).load_state_dict({"sample_idx": 7})


def test_another_state_version_is_refused_naming_it(corpus):
    doc = json.loads(saved_state(corpus)[STATE_KEY])
    doc["version"] = 99
    with pytest.raises(
        TinytitanError,
        match=r"data loader state version 99 is not one this tinytitan reads \(1, 2, 3\).*exclude_from_loading",
    ):
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


# The resumed run is a new process: it lists the files again (a process lists a config's files once).
RESUME_IN_A_NEW_PROCESS = """
import sys
from pathlib import Path

import torch

from tests.data.fixtures import Corpus, loader
from tinytitan.errors import TinytitanError

root = Path(sys.argv[1])
corpus = Corpus(root, root / "SlimPajama-627B", root / "starcoderdata", root / "tokenizer")
try:
    loader(corpus, batch=4, seq_len=64).load_state_dict(torch.load(sys.argv[2]))
except TinytitanError as e:
    sys.exit(str(e))
"""


def test_changed_files_are_refused(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")  # changed below: not the shared session corpus
    torch.save(saved_state(corpus), tmp_path / "state.pt")
    extra = corpus.starcoderdata / "python" / "train-00002-of-00002.parquet"
    extra.write_bytes((corpus.starcoderdata / "python" / "train-00000-of-00002.parquet").read_bytes())
    command = [sys.executable, "-c", RESUME_IN_A_NEW_PROCESS, str(corpus.root), str(tmp_path / "state.pt")]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "'starcoderdata': its files, filter or held-out split changed" in proc.stderr

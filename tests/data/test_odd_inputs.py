"""Odd data a user may point the loader at (issue 22): a file reached by several paths, one huge
document, a resume with another sequence length. Real files, the real loader, the fixture tokenizer."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

from tests.data.fixtures import ID_BASE, loader, sources
from tests.helpers import tree_digest
from tinytitan.data.encode import Encoder, split_long
from tinytitan.data.files import FileInfo, Opener, iter_lines
from tinytitan.data.listing import list_files
from tinytitan.tokenizer import load_tokenizer

EMBEDDED_TOKENIZER = "tinytitan/assets/tokenizer"


def stream(dl, batches: int) -> np.ndarray:
    """The tokens the loader served, in order: each row is one window of seq_len + 1 tokens."""
    it = iter(dl)
    rows = []
    for _ in range(batches):
        inputs, labels = next(it)
        rows.append(torch.cat([inputs["input"], labels[:, -1:]], dim=1).reshape(-1))
    return torch.cat(rows).numpy()


def write_docs(path, ids, words=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": " ".join([f"d{i}"] + [f"w{(i + k) % 90}" for k in range(words - 1)])})
                            + "\n" for i in ids))  # fmt: skip


# ---------------------------------------------------------------- case 1: several paths to one file


def test_a_file_reached_by_several_paths_is_trained_once_per_pass(corpus, tmp_path, caplog):
    """A ``loop -> .`` symlink, a symlinked sibling folder and a hard link: each file once, one warning."""
    root = tmp_path / "linked"
    write_docs(root / "a" / "f0.jsonl", range(0, 10))
    write_docs(root / "a" / "f1.jsonl", range(10, 20))
    os.link(root / "a" / "f0.jsonl", root / "a" / "hard.jsonl")
    (root / "b").symlink_to("a")
    (root / "loop").symlink_to(".")
    before = tree_digest(root / "a")
    with caplog.at_level(logging.WARNING, logger="tinytitan.data"):
        assert list_files(str(root), "**/*.jsonl") == ["a/f0.jsonl", "a/f1.jsonl"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "tinytitan.data"]
    assert warnings == [
        f"data: '**/*.jsonl' in {root}: 4 path(s) lead to files listed already (symlinks or hard links): "
        "a/hard.jsonl (= a/f0.jsonl), b/f0.jsonl (= a/f0.jsonl), b/f1.jsonl (= a/f1.jsonl) and 1 more; "
        "1 symlink(s) lead back to a folder above them, not followed: loop; each file is read once"
    ]

    source = dict(name="linked", path=str(root), files="**/*.jsonl", weight=1.0)
    dl = loader(corpus, batch=4, seq_len=31, source_list=[source], data_overrides={"lanes": 1})
    one_pass = 20 * (12 + 2)  # 20 distinct documents of 12 tokens, each between BOS and EOS
    served = stream(dl, -(-one_pass // (4 * 32)))[:one_pass]
    dl.close()
    assert sorted(int(t) - ID_BASE for t in served if t >= ID_BASE) == list(range(20))  # each once, none twice
    assert tree_digest(root / "a") == before


def test_a_held_out_file_reached_through_a_link_still_overlaps(corpus, tmp_path):
    from tinytitan.data.config import Source
    from tinytitan.data.listing import list_source
    from tinytitan.errors import TinytitanError

    root = tmp_path / "src"
    write_docs(root / "validation" / "v.jsonl", range(3))
    write_docs(root / "train" / "t.jsonl", range(3, 6))
    (root / "train" / "v-link.jsonl").symlink_to("../validation/v.jsonl")
    s = Source(name="x", path=str(root), files="train/*.jsonl", validation_files="validation/*.jsonl")
    with pytest.raises(TinytitanError, match="train/v-link.jsonl is both a training and a validation file"):
        list_source(s)


# ---------------------------------------------------------------- case 10: one huge document


def test_long_documents_are_tokenized_in_pieces_that_give_the_same_tokens():
    """Llama 3's split pattern cuts before a space between two non-spaces, so pieces change no token."""
    sample = "tinytitan/assets/sample/SlimPajama-627B/train/chunk1/example_train_0.jsonl.zst"
    opener = Opener(os.path.dirname(sample), None)
    texts = [json.loads(line)["text"] for line in iter_lines(opener, FileInfo(os.path.basename(sample), 0, None))]
    text = "\n\n".join(texts[:80]) + "  x  1234567 \t\n  y" * 50  # newlines, runs of spaces, digits, tabs
    whole, pieces = Encoder(load_tokenizer(EMBEDDED_TOKENIZER)), Encoder(load_tokenizer(EMBEDDED_TOKENIZER))
    pieces.piece_chars, whole.piece_chars = 997, len(text)
    assert len(split_long(text, 997)) > 100 and "".join(split_long(text, 997)) == text
    a, b = whole.encode_docs([text, "short"]), pieces.encode_docs([text, "short"])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    hard = "x" * 5000  # no space at all: cut at the piece length
    assert [len(p) for p in split_long(hard, 997)] == [997] * 5 + [15]


def test_a_line_longer_than_many_read_chunks_is_read_in_linear_time(tmp_path):
    long = json.dumps({"text": "w1 " * 2_000_000})  # 6 MB: six 1 MiB read chunks
    (tmp_path / "f.jsonl").write_text(long + "\n" + '{"text": "short"}' + "\n")
    lines = list(iter_lines(Opener(str(tmp_path), None), FileInfo("f.jsonl", 0, None)))
    assert [len(x) for x in lines] == [len(long), len('{"text": "short"}')] and lines[0] == long.encode()


def test_a_resume_inside_a_long_document_is_exact(corpus, tmp_path):
    """A document longer than a tokenizer piece (1 MiB), resumed in its middle: the same tokens follow."""
    root = tmp_path / "long"
    write_docs(root / "f.jsonl", [0])
    with open(root / "f.jsonl", "a") as f:
        f.write(json.dumps({"text": "d1 " + " ".join(f"w{k % 90}" for k in range(400_000))}) + "\n")
    source = dict(name="long", path=str(root), files="f.jsonl", weight=1.0)
    kw = dict(batch=4, seq_len=64, source_list=[source], data_overrides={"lanes": 1})
    reference = loader(corpus, **kw)
    expected = stream(reference, 8)
    first = loader(corpus, **kw)
    assert np.array_equal(stream(first, 4), expected[: 4 * 4 * 65])
    state = first.state_dict()
    resumed = loader(corpus, **kw)
    resumed.load_state_dict(state)
    assert np.array_equal(stream(resumed, 4), expected[4 * 4 * 65 :])  # windows 17-32: inside document 1
    whole = load_tokenizer(corpus.tokenizer).tokenizer.encode(
        json.loads((root / "f.jsonl").read_text().splitlines()[1])["text"], add_special_tokens=False
    )
    assert expected[15:].tolist() == whole.ids[: len(expected) - 15]  # after document 0 (14 tokens) and a BOS
    for dl in (reference, first, resumed):
        dl.close()


# ---------------------------------------------------------------- case 15: another seq_len on resume


def test_a_resume_with_another_seq_len_says_so_in_one_line_and_continues(corpus, caplog):
    one = [dict(sources(corpus)[1], weight=1.0)]  # one source, one lane: the served tokens are one stream
    kw = dict(batch=4, source_list=one, data_overrides={"lanes": 1})
    expected = stream(loader(corpus, seq_len=64, **kw), 12)
    first = loader(corpus, seq_len=64, **kw)
    stream(first, 5)
    state = first.state_dict()
    longer = loader(corpus, seq_len=32, **kw)
    with caplog.at_level(logging.INFO, logger="tinytitan.data"):
        longer.load_state_dict(state)
    said = [r.getMessage() for r in caplog.records if "seq_len" in r.getMessage()]
    assert said == [
        "data: training.seq_len changed since the checkpoint (64 -> 32); the stream continues where it stopped, "
        "in windows of the new length"
    ]
    done = 5 * 4 * 65
    assert np.array_equal(stream(longer, 6), expected[done : done + 6 * 4 * 33])

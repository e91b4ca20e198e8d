"""Checks on the shipped sample corpus and tokenizer in tinytitan/assets.

Regenerate the assets with ``util/make_sample.py`` and ``util/train_tokenizer.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent.parent / "tinytitan" / "assets"
SAMPLE = ASSETS / "sample"
TOKENIZER = ASSETS / "tokenizer"

SLIMPAJAMA_FILES = [
    "SlimPajama-627B/train/chunk1/example_train_0.jsonl.zst",
    "SlimPajama-627B/train/chunk2/example_train_0.jsonl.zst",
    "SlimPajama-627B/validation/chunk1/example_holdout_0.jsonl.zst",
]
STARCODER_FILE = "starcoderdata/python/train-00000-of-00001.parquet"
SET_NAMES = {
    "RedPajamaBook",
    "RedPajamaGithub",
    "RedPajamaWikipedia",
    "RedPajamaCommonCrawl",
}
VOCAB_SIZE = 4096
BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
UNICODE_TEXT = "héllo wörld 你好 🙂\n\tdef f(x): return x"


def read_jsonl_zst(path: Path) -> list[dict]:
    import zstandard

    with path.open("rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


# --------------------------------------------------------------------------- #
# Sample corpus
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "rel",
    [*SLIMPAJAMA_FILES, STARCODER_FILE, "README.md", "LICENSE-PSF.txt"],
)
def test_sample_layout(rel):
    assert (SAMPLE / rel).is_file(), f"missing {SAMPLE / rel}"


def test_sample_size_limit():
    total = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert total <= 5 * 1024 * 1024, f"sample is {total} bytes"


@pytest.mark.parametrize("rel", SLIMPAJAMA_FILES)
def test_slimpajama_records(rel):
    records = read_jsonl_zst(SAMPLE / rel)
    assert records
    for rec in records:
        assert set(rec) == {"text", "meta"}
        assert isinstance(rec["text"], str)
        assert rec["text"]
        assert isinstance(rec["meta"]["redpajama_set_name"], str)
        assert rec["meta"]["redpajama_set_name"] in SET_NAMES


def test_slimpajama_sets_and_holdout():
    train = [r for rel in SLIMPAJAMA_FILES[:2] for r in read_jsonl_zst(SAMPLE / rel)]
    valid = read_jsonl_zst(SAMPLE / SLIMPAJAMA_FILES[2])
    names = [r["meta"]["redpajama_set_name"] for r in train]
    # Every set is present so an exclusion filter can be tested; books dominate.
    assert set(names) == SET_NAMES
    assert names.count("RedPajamaBook") > len(names) / 2
    # ~5 % held out, and no document is in both splits.
    assert 0.03 < len(valid) / (len(train) + len(valid)) < 0.08
    assert not {r["text"] for r in train} & {r["text"] for r in valid}


def test_starcoder_parquet():
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(SAMPLE / STARCODER_FILE)
    assert table.schema.names == [
        "max_stars_repo_path",
        "max_stars_repo_name",
        "max_stars_count",
        "id",
        "content",
    ]
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types["max_stars_count"] == pa.int64()
    for name in ("max_stars_repo_path", "max_stars_repo_name", "id", "content"):
        assert types[name] == pa.string(), name
    assert table.num_rows > 10
    assert all(table.column("content").to_pylist())


# --------------------------------------------------------------------------- #
# Tokenizer
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def hf_tokenizers_tok():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TOKENIZER / "tokenizer.json"))


@pytest.fixture(scope="module")
def titan_tok():
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    return HuggingFaceTokenizer(tokenizer_path=str(TOKENIZER))


@pytest.fixture(scope="module")
def auto_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER))


def test_tokenizer_config():
    cfg = json.loads((TOKENIZER / "tokenizer_config.json").read_text())
    assert cfg["bos_token"] == BOS
    assert cfg["eos_token"] == EOS
    assert cfg["add_bos_token"] is False
    assert cfg["add_eos_token"] is False
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert cfg["model_max_length"] == 2048
    assert cfg["clean_up_tokenization_spaces"] is False


def test_vocab_size(hf_tokenizers_tok, titan_tok, auto_tok):
    assert hf_tokenizers_tok.get_vocab_size() == VOCAB_SIZE
    assert titan_tok.get_vocab_size() == VOCAB_SIZE
    assert len(auto_tok) == VOCAB_SIZE


def test_roundtrip_unicode(hf_tokenizers_tok, titan_tok, auto_tok):
    ids = titan_tok.encode(UNICODE_TEXT)
    assert titan_tok.decode(ids) == UNICODE_TEXT
    assert hf_tokenizers_tok.decode(hf_tokenizers_tok.encode(UNICODE_TEXT).ids) == UNICODE_TEXT
    assert auto_tok.decode(auto_tok(UNICODE_TEXT)["input_ids"]) == UNICODE_TEXT


def test_bos_eos_ids_agree(titan_tok, auto_tok):
    assert titan_tok.bos_id is not None
    assert titan_tok.eos_id is not None
    assert titan_tok.bos_id != titan_tok.eos_id
    assert titan_tok.bos_id == auto_tok.bos_token_id == auto_tok.convert_tokens_to_ids(BOS)
    assert titan_tok.eos_id == auto_tok.eos_token_id == auto_tok.convert_tokens_to_ids(EOS)


def test_encode_adds_no_bos_eos(titan_tok, auto_tok):
    bos, eos = titan_tok.bos_id, titan_tok.eos_id
    text = "In the beginning God created the heaven and the earth."
    titan_ids = titan_tok.encode(text)
    auto_ids = auto_tok(text)["input_ids"]
    assert titan_ids == auto_ids
    assert bos not in titan_ids
    assert eos not in titan_ids
    assert titan_tok.encode("") == []
    # ... but the loader can ask for them explicitly.
    assert titan_tok.encode(text, add_bos=True, add_eos=True) == [bos, *titan_ids, eos]

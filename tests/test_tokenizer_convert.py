"""``convert-tokenizer``: Meta's tiktoken file -> tokenizer.json with Meta's ids and Meta-Llama-3-8B's names."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tinytitan.cli import main
from tinytitan.data.encode import Encoder
from tinytitan.tokenizer import load_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; they'll say I'd've known.",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\n\nclass A(B):\n\tpass\r\n",
    "1234567 3.14159 2024-12-02 0x7fff 1e-9 99999999999",
    "naïve café 東京 🙂🙂 Ωμέγα Привет мир ﷽ \u200b\u00a0",
    " " * 1000 + "x\n\n\n\t\t  \n" + "\t" * 50 + "y" + "\n" * 300,
    "a <|eot_id|> b<|begin_of_text|>c <|end_of_text|><|reserved_special_token_5|> <|start_header_id|>",
]


@pytest.fixture(scope="module")
def meta(llama3_model):
    """Meta's own tokenizer class from llama-models (a tiktoken Encoding inside)."""
    from llama_models.llama3.tokenizer import Tokenizer

    return Tokenizer(llama3_model)


def test_ids_equal_meta_tiktoken_and_special_strings_are_plain_text(llama3_tokenizer, meta):
    tok = load_tokenizer(llama3_tokenizer)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (128000, 128001, 128256)
    expected = [meta.model.encode_ordinary(t) for t in TEXTS]
    assert [tok.encode(t) for t in TEXTS] == expected
    # The data loader: BOS body EOS per document, special-token strings as text (tiktoken's encode_ordinary).
    flat, starts = Encoder(tok).encode_docs(TEXTS)
    assert flat.tolist() == [i for ids in expected for i in (128000, *ids, 128001)]
    assert 128009 not in flat.tolist() and meta.model.encode_ordinary("<|eot_id|>") == tok.encode("<|eot_id|>")
    assert all(tok.decode(tok.encode(t)) == t for t in TEXTS)


def test_special_tokens_are_named_as_meta_llama_3_8b(llama3_tokenizer):
    tok = load_tokenizer(llama3_tokenizer).tokenizer
    names = {i: tok.id_to_token(i) for i in range(128000, 128256)}
    assert [names[i] for i in range(128000, 128010)] == [
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
        "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>",
        "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>",
    ]  # fmt: skip
    assert names[128010] == "<|reserved_special_token_5|>" and names[128255] == "<|reserved_special_token_250|>"
    config = json.loads((llama3_tokenizer / "tokenizer_config.json").read_text())
    assert {int(k): v["content"] for k, v in config["added_tokens_decoder"].items()} == names
    assert tok.encode("hi").ids == [128000, 6151]  # the post-processor prepends BOS, as Meta's files do


def test_transformers_reads_the_folder_as_meta_does(llama3_tokenizer, meta):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(llama3_tokenizer)
    assert (hf.bos_token_id, hf.eos_token_id, len(hf)) == (128000, 128001, 128256)
    assert hf(TEXTS[0])["input_ids"] == [128000, *meta.model.encode_ordinary(TEXTS[0])]
    assert hf.decode([64, 128009, 65], skip_special_tokens=True) == "ab"  # every added token is special
    # Unlike training, transformers parses special-token strings (documented in docs/data.md).
    assert hf("a<|eot_id|>", add_special_tokens=False)["input_ids"] == [64, 128009]


def test_seed_folder_with_only_the_model_converts_in_place_and_keeps_it(llama3_model, tmp_path, capsys):
    folder = tmp_path / "llama3"
    (folder / "original").mkdir(parents=True)
    shutil.copyfile(llama3_model, folder / "original" / "tokenizer.model")
    digest = hashlib.sha256(llama3_model.read_bytes()).hexdigest()
    with pytest.raises(Exception, match=r"has only original/tokenizer.model .*tinytitan convert-tokenizer"):
        load_tokenizer(folder)
    model = folder / "original" / "tokenizer.model"
    assert main(["convert-tokenizer", str(model), "--out", str(folder)]) == 0
    assert hashlib.sha256(model.read_bytes()).hexdigest() == digest
    assert load_tokenizer(folder).vocab_size == 128256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama3"]  # no temp folder left
    # Again: the folder now holds a tokenizer, which is not replaced without --force.
    before = (folder / "tokenizer.json").read_bytes()
    assert main(["convert-tokenizer", str(model), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is not empty: pass --force" in err and err.count("\n") == 1 and "Traceback" not in err
    assert (folder / "tokenizer.json").read_bytes() == before


def test_a_sentencepiece_or_missing_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x0a\x0b<unk>\x00 not tiktoken")
    assert main(["convert-tokenizer", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert main(["convert-tokenizer", str(tmp_path / "nope.model"), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert "is not a tiktoken BPE file" in lines[0] and "is not a file" in lines[1] and len(lines) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.model"]

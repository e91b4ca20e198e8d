#!/usr/bin/env python3
"""Train the small byte-level BPE tokenizer shipped in ``tinytitan/assets/tokenizer``.

Llama-3 style: the Llama 3 pre-tokenization regex (``Split``) followed by a
GPT-2 ``ByteLevel`` byte-to-unicode mapping, a BPE model trained with the
Hugging Face ``tokenizers`` library, and Llama 3 special tokens appended after
the BPE vocabulary (``<|begin_of_text|>``, ``<|end_of_text|>``, ...). There is
no normalizer and no post-processor: ``decode(encode(s)) == s`` for any string
and the tokenizer never inserts BOS/EOS itself -- the data loader does.

Training data: the train split of the sample corpus made by
``util/make_sample.py`` (SlimPajama-like ``train/**/*.jsonl.zst`` and the
starcoderdata-like ``*.parquet``); validation files are not used.

Determinism: BPE training has no randomness. Word counts are order-free sums,
the initial alphabet gets ids in sorted order, and merge ties (equal counts) are
broken by pair ids. The only known source of run-to-run differences in
``tokenizers`` -- ids of ``continuing_subword_prefix`` / ``end_of_word_suffix``
symbols assigned in hash-map order (huggingface/tokenizers#1794) -- is not
used here. Checked: 1 and 8 rayon threads give the same ``tokenizer.json``;
the script still pins ``RAYON_NUM_THREADS=1`` (set before ``tokenizers`` is
imported) as a cheap safeguard, and feeds documents in file order.

Usage::

    python util/train_tokenizer.py        # --sample tinytitan/assets/sample
                                          # --out tinytitan/assets/tokenizer
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLE = REPO_ROOT / "tinytitan" / "assets" / "sample"
DEFAULT_OUT = REPO_ROOT / "tinytitan" / "assets" / "tokenizer"

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
# The first special tokens of Llama 3.1, in Llama's order (ids 128000..128010
# there, the last ids of the vocabulary here).
SPECIAL_TOKENS = [
    BOS,
    EOS,
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
# Llama 3 pre-tokenizer regex (as in Meta's tiktoken-based tokenizer).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
MODEL_MAX_LENGTH = 2048


def die(msg: str) -> None:
    sys.exit(f"error: {msg}")


# --------------------------------------------------------------------------- #
# Reading the sample
# --------------------------------------------------------------------------- #
def slimpajama_train_files(sample: Path) -> list[Path]:
    return sorted((sample / "SlimPajama-627B" / "train").glob("*/*.jsonl.zst"))


def starcoder_files(sample: Path) -> list[Path]:
    return sorted((sample / "starcoderdata").glob("*/*.parquet"))


def iter_slimpajama(files: list[Path]) -> Iterator[tuple[str, str]]:
    """Yields (redpajama_set_name, text)."""
    import zstandard

    for path in files:
        with path.open("rb") as fh:
            raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
        for line in raw.decode("utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                yield rec["meta"]["redpajama_set_name"], rec["text"]


def iter_starcoder(files: list[Path]) -> Iterator[str]:
    import pyarrow.parquet as pq

    for path in files:
        yield from pq.read_table(path, columns=["content"]).column("content").to_pylist()


# --------------------------------------------------------------------------- #
# Building / training
# --------------------------------------------------------------------------- #
def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(byte_fallback=False, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train(texts: list[str], vocab_size: int):
    from tokenizers import AddedToken, pre_tokenizers, trainers

    n_bpe = vocab_size - len(SPECIAL_TOKENS)
    if n_bpe < 256:
        die(f"--vocab-size must be >= {256 + len(SPECIAL_TOKENS)}")
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        # All 256 byte symbols, so every possible byte is in the vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if tok.get_vocab_size() != n_bpe:
        die(f"BPE training produced {tok.get_vocab_size()} tokens, wanted {n_bpe}")
    # Appended after the BPE vocabulary, like Llama 3 (ids n_bpe .. vocab_size-1).
    tok.add_special_tokens(
        [
            AddedToken(
                t,
                single_word=False,
                lstrip=False,
                rstrip=False,
                normalized=False,
                special=True,
            )
            for t in SPECIAL_TOKENS
        ]
    )
    if tok.get_vocab_size() != vocab_size:
        die(f"tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size}")
    return tok


def tokenizer_config(tok) -> dict:
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    return {
        "added_tokens_decoder": added,
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MODEL_MAX_LENGTH,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


# --------------------------------------------------------------------------- #
# Verification
# --------------------------------------------------------------------------- #
ROUNDTRIP_SAMPLES = [
    "héllo wörld 你好 🙂\n\tdef f(x): return x",
    "  leading spaces, trailing tab\t\r\n\r\nCRLF \u00a0nbsp \u200bzwsp",
    "Ünïcödé: Ελληνικά Русский العربية हिन्दी 日本語 한국어 \U0001f680\U0001f9ea",
    "e\u0301 vs \u00e9 (NFC and NFD must both survive)",
    # Like Llama 3 in HF: a literal special-token string in text maps to its id.
    "literal <|begin_of_text|> in text",
]


def verify(out: Path, vocab_size: int) -> dict[str, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    for s in ROUNDTRIP_SAMPLES[:-1]:
        ids = tok.encode(s).ids
        assert tok.decode(ids, skip_special_tokens=False) == s, s
        assert bos not in ids and eos not in ids, s
    assert tok.encode("").ids == []

    # torchtitan's loader: must find the same ids and not add BOS/EOS by default.
    try:
        from torchtitan.components.tokenizer import HuggingFaceTokenizer
    except ImportError as e:
        print(f"  (torchtitan check skipped: {e})")
    else:
        tt = HuggingFaceTokenizer(tokenizer_path=str(out))
        assert (tt.bos_id, tt.eos_id) == (bos, eos), (tt.bos_id, tt.eos_id)
        assert tt.get_vocab_size() == vocab_size, tt.get_vocab_size()
        assert not (tt.default_add_bos or tt.default_add_eos)
        s = ROUNDTRIP_SAMPLES[0]
        assert tt.encode(s) == tok.encode(s).ids
        assert tt.encode(s, add_bos=True, add_eos=True) == [
            bos,
            *tok.encode(s).ids,
            eos,
        ]
        print(f"  torchtitan HuggingFaceTokenizer: bos_id={tt.bos_id} eos_id={tt.eos_id} vocab={tt.get_vocab_size()}")

    # transformers' loader: same ids, no automatic BOS/EOS.
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        print(f"  (transformers check skipped: {e})")
    else:
        hf = AutoTokenizer.from_pretrained(str(out))
        assert (hf.bos_token_id, hf.eos_token_id) == (bos, eos)
        assert len(hf) == vocab_size, len(hf)
        for s in ROUNDTRIP_SAMPLES:
            ids = hf(s)["input_ids"]
            assert ids == tok.encode(s).ids, s
            assert hf.decode(ids) == s, s
        print(
            f"  transformers {type(hf).__name__}: bos_token_id={hf.bos_token_id} "
            f"eos_token_id={hf.eos_token_id} len={len(hf)}"
        )
    return {"bos_id": bos, "eos_id": eos}


README_TEMPLATE = """\
# tinytitan sample tokenizer

Byte-level BPE tokenizer, {vocab_size} tokens in total, trained on the train
split of `../sample` (see its README for sources and licences). It is
**generated** -- do not edit by hand. Regenerate (deterministic, byte-identical)
with:

```
python util/train_tokenizer.py   # --sample tinytitan/assets/sample --out tinytitan/assets/tokenizer
```

* Pre-tokenizer: Llama 3 split regex, then GPT-2 `ByteLevel` (no regex, no
  prefix space); decoder `ByteLevel`; no normalizer, so `decode(encode(s)) == s`
  for any string.
* ids 0..{last_bpe}: BPE vocabulary (256 byte symbols + merges).
* ids {first_special}..{last_id}: special tokens, in Llama 3.1 order:
{specials}
* No post-processor: encoding never adds `<|begin_of_text|>` (BOS) or
  `<|end_of_text|>` (EOS); `tokenizer_config.json` says
  `add_bos_token: false, add_eos_token: false`. The data loader adds them.
* Loads with `torchtitan.components.tokenizer.HuggingFaceTokenizer(DIR)` and
  `transformers.AutoTokenizer.from_pretrained(DIR)`; both give the same ids.

Tokens on the sample's train split (no BOS/EOS):

| source | docs | tokens | bytes/token |
|---|---:|---:|---:|
{table}
| total | | {total} | |
"""


def write_readme(out: Path, tok, rows, total_tok: int) -> None:
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    text = README_TEMPLATE.format(
        vocab_size=tok.get_vocab_size(),
        last_bpe=min(ids) - 1,
        first_special=min(ids),
        last_id=max(ids),
        specials="\n".join(f"  * {i}: `{t}`" for i, t in zip(ids, SPECIAL_TOKENS, strict=True)),
        table="\n".join(
            f"| {name.strip()} | {n_docs} | {n_tok:,} | {n_bytes / n_tok:.2f} |"
            for name, n_docs, n_tok, n_bytes in rows
        ),
        total=f"{total_tok:,}",
    )
    (out / "README.md").write_text(text, encoding="utf-8")


def main() -> None:
    # Safeguard (see module docstring): set before `tokenizers` is first imported
    # (all its imports are inside functions) so its rayon pool has one thread.
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="sample corpus dir")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output tokenizer dir")
    ap.add_argument("--vocab-size", type=int, default=4096, help="total, incl. special tokens")
    ap.add_argument("--no-verify", action="store_true", help="skip the loader checks")
    args = ap.parse_args()

    sp_files = slimpajama_train_files(args.sample)
    sc_files = starcoder_files(args.sample)
    if not sp_files or not sc_files:
        die(f"no sample corpus under {args.sample}; run: python util/make_sample.py")

    prose = list(iter_slimpajama(sp_files))
    code = list(iter_starcoder(sc_files))
    texts = [t for _, t in prose] + code
    tok = train(texts, args.vocab_size)

    args.out.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out / "tokenizer.json"), pretty=True)
    cfg = tokenizer_config(tok)
    (args.out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'tokenizer.json'} and tokenizer_config.json (vocab {tok.get_vocab_size()})")

    # ---- token counts on the train split ---------------------------------- #
    def count(docs: list[str]) -> tuple[int, int]:
        n_bytes = sum(len(t.encode("utf-8")) for t in docs)
        n_tok = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
        return n_tok, n_bytes

    rows: list[tuple[str, int, int, int]] = []
    for s in sorted({s for s, _ in prose}):
        docs = [t for name, t in prose if name == s]
        rows.append((f"  SlimPajama {s}", len(docs), *count(docs)))
    rows.append(("SlimPajama-627B (train)", len(prose), *count([t for _, t in prose])))
    rows.append(("starcoderdata (python)", len(code), *count(code)))
    total_tok = rows[-2][2] + rows[-1][2]
    print("token counts (train split, without BOS/EOS):")
    for name, n_docs, n_tok, n_bytes in rows:
        share = f"{100 * n_tok / total_tok:5.1f}%" if not name.startswith(" ") else "      "
        print(f"  {name:<36} {n_docs:5d} docs {n_tok:9,d} tokens {share} {n_bytes / n_tok:5.2f} bytes/token")
    print(f"  {'total':<36} {len(texts):5d} docs {total_tok:9,d} tokens")
    write_readme(args.out, tok, rows, total_tok)

    if not args.no_verify:
        ids = verify(args.out, args.vocab_size)
        print(f"verified: round-trip ok, bos_id={ids['bos_id']} eos_id={ids['eos_id']}")


if __name__ == "__main__":
    main()

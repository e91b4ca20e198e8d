"""``tinytitan convert-tokenizer``: Meta's tiktoken ``tokenizer.model`` -> a Hugging Face tokenizer folder.

The seed workflow (``download_tokenizer.py --tokenizer_path original``) leaves users with
only ``original/tokenizer.model``: the BPE ranks of Llama 3, one ``base64(token) rank`` per
line, in the format of Meta's ``tiktoken`` tokenizer. Training, the data loader and export
read a ``tokenizer.json``, so this writes one with the same ids as Meta's encoding:

* the vocabulary is the ranks, each token's bytes spelled in byte-level characters;
* the merges are recovered from the ranks (a token of rank r is the merge of any two tokens
  that make it up), ordered by r, and ``ignore_merges`` takes a pre-token that is itself in
  the vocabulary whole, as tiktoken does;
* the pre-tokenizer is Llama 3's split pattern, then the byte-level mapping;
* the 256 special tokens follow at 128000.., named as in Meta-Llama-3-8B's ``tokenizer.json``
  (not as llama-models names them: its names for some reserved ids are Llama 3.1's);
* the post-processor prepends ``<|begin_of_text|>``, as Meta's files do.

The folder is written beside ``--out`` and renamed into place (nothing half-written).
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
from pathlib import Path

from tinytitan.errors import TinytitanError

ORIGINAL = "original/tokenizer.model"
# Llama 3's pre-tokenizer split (Meta's tokenizer.py and tokenizer.json use the same).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_SPECIAL = 256
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


def llama3_special_tokens() -> list[str]:
    """The 256 special tokens in id order, as Meta-Llama-3-8B's own ``tokenizer.json`` names them."""
    named = [BOS, EOS] + [f"<|reserved_special_token_{i}|>" for i in range(4)]
    named += ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    return named + [f"<|reserved_special_token_{i}|>" for i in range(5, NUM_SPECIAL - 5)]


def read_ranks(path: Path) -> dict[bytes, int]:
    """The ``base64(token) rank`` lines of a tiktoken BPE file; ranks must be 0..n-1."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise TinytitanError(f"cannot read {path} ({e.strerror or e}): pass Meta's original/tokenizer.model") from None
    ranks: dict[bytes, int] = {}
    try:
        for line in lines:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except (ValueError, binascii.Error):
        raise TinytitanError(
            f"{path} is not a tiktoken BPE file (line {len(ranks) + 1} is not 'base64 rank'): "
            "pass Meta's original/tokenizer.model (Llama 3), not a SentencePiece model"
        ) from None
    if sorted(ranks.values()) != list(range(len(ranks))) or len(ranks) < 256:
        raise TinytitanError(f"{path}: the ranks are not 0..n-1 over at least the 256 bytes; the file is damaged")
    return ranks


def _byte_chars() -> list[str]:
    """Byte b -> the printable character byte-level BPE spells it with (printable bytes stay themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _merges(ranks: dict[bytes, int], spell) -> list[tuple[str, str]]:
    """Every way to make each token from two tokens, ordered by the token's rank, then the parts' ranks."""
    found = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            lr, rr = ranks.get(left), ranks.get(right)
            if lr is not None and rr is not None:
                found.append((rank, lr, rr, left, right))
    found.sort(key=lambda m: m[:3])
    return [(spell(left), spell(right)) for _, _, _, left, right in found]


def build_tokenizer(ranks: dict[bytes, int]):
    """A ``tokenizers.Tokenizer`` equal to Meta's tiktoken encoding, with the special tokens added."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    chars = _byte_chars()

    def spell(token: bytes) -> str:
        return "".join(chars[b] for b in token)

    vocab = {spell(t): r for t, r in ranks.items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges(ranks, spell), ignore_merges=True, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = llama3_special_tokens()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = len(ranks)
    if tok.token_to_id(BOS) != bos or tok.token_to_id(specials[-1]) != bos + NUM_SPECIAL - 1:
        raise TinytitanError("the special tokens did not land right after the ranks: the file has duplicate tokens")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A:0", pair=f"{BOS} $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos)]
            ),
        ]
    )
    return tok


def tokenizer_config(first_special: int) -> dict:
    """``tokenizer_config.json``: BOS/EOS and every special token marked special, for transformers 4 and 5.

    The special tokens are listed in ``added_tokens_decoder`` only: transformers 5 ignores
    ``additional_special_tokens`` and 4.x reads ``extra_special_tokens`` differently, while
    both read ``added_tokens_decoder``.
    """
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    added = {str(first_special + i): {"content": s, **flags} for i, s in enumerate(llama3_special_tokens())}
    return {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": EOS,
        "clean_up_tokenization_spaces": False,  # decode(encode(text)) == text
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write_converted(model: Path, folder: Path) -> list[Path]:
    """Writes tokenizer.json, tokenizer_config.json and original/tokenizer.model into an existing ``folder``."""
    ranks = read_ranks(model)
    tok = build_tokenizer(ranks)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(len(ranks)), indent=2) + "\n")
    original = folder / ORIGINAL
    if model.resolve() != original.resolve():
        original.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model, original)
    return [folder / "tokenizer.json", folder / "tokenizer_config.json", original]


def convert_command(model: Path | str, out: Path | str) -> str:
    return f"tinytitan convert-tokenizer {model} --out {out}"


def convert_tokenizer(model: Path, out: Path, force: bool = False, log=print) -> list[Path]:
    """Converts ``model`` into the folder ``out``, all or nothing.

    ``out`` may be the folder that holds ``model`` as ``original/tokenizer.model`` (the seed
    layout): the model is copied into the new folder before the old one is replaced, so the
    conversion completes that folder without ``--force``.
    """
    from tinytitan.folders import check_output_folder, make_temp_dir, replace_folder

    model, out = Path(model), Path(out)
    if not model.is_file():
        raise TinytitanError(f"{model} is not a file: pass the path of Meta's original/tokenizer.model")
    in_place = out.is_dir() and model.resolve() == (out / ORIGINAL).resolve()
    only_model = in_place and [p for p in out.rglob("*") if not p.is_dir()] == [out / ORIGINAL]
    check_output_folder(out, [] if in_place else [("the tokenizer model", model)], force or only_model)
    tmp = make_temp_dir(out, log)
    try:
        write_converted(model, tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / "tokenizer.json", out / "tokenizer_config.json", out / ORIGINAL]


def configure(parser) -> None:
    parser.add_argument(
        "model", type=Path, help="Meta's tiktoken file, e.g. assets/tokenizer/llama3/original/tokenizer.model"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="tokenizer folder to write (may be the model's own folder)"
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")


def run(args) -> int:
    for path in convert_tokenizer(args.model, args.out, force=args.force):
        print(f"wrote {path}")
    return 0

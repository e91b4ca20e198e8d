"""The tokenizer files of an export: read from the training tokenizer folder, copied, BOS made explicit.

What was trained (flavor, sequence length, data) comes from the run's record: ``tinytitan.run.record``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

EXPORT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")  # copied into an export


@dataclass(frozen=True)
class TokenizerInfo:
    folder: Path
    bos_id: int | None
    eos_id: int | None
    vocab_size: int
    files: tuple[Path, ...]  # copied into an HF export
    sentencepiece: Path | None  # tokenizer.model, for the Meta format


def read_tokenizer(folder: str | os.PathLike) -> TokenizerInfo:
    """bos/eos ids as the tokenizer defines them, so config.json never guesses them."""
    from tinytitan.tokenizer import load_tokenizer

    loaded = load_tokenizer(folder)
    folder = loaded.folder
    files = tuple(folder / f for f in EXPORT_FILES if (folder / f).is_file())
    spm = next((p for p in (folder / "tokenizer.model", folder / "original" / "tokenizer.model") if p.is_file()), None)
    return TokenizerInfo(folder, loaded.bos_id, loaded.eos_id, loaded.vocab_size, files, spm)


def write_tokenizer(tok: TokenizerInfo, folder: Path) -> list[Path]:
    """Copies the tokenizer files; makes ``tokenizer.json`` start every text with bos, as training did.

    tinytitan's data loader puts bos before (and eos after) every document, and
    torchtitan's tokenizer adds bos itself when tokenizer.json does not. A
    tokenizer.json without that post-processor would make transformers users
    feed the model text without the bos it was trained with, so the export adds
    Llama 3's template (``<bos> $A``) in that case; the Llama 3 tokenizer
    already has it and is copied unchanged.
    """
    import shutil

    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    written = [Path(shutil.copy2(f, folder / f.name)) for f in tok.files]
    if tok.bos_id is None:
        return written
    hf_tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if hf_tok.encode("a").ids[:1] == [tok.bos_id]:
        return written
    bos = hf_tok.id_to_token(tok.bos_id)
    hf_tok.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, tok.bos_id)]
    )
    hf_tok.save(str(folder / "tokenizer.json"))
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["add_bos_token"] = True
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return written

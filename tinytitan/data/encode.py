"""Batch tokenization of documents into ``<|begin_of_text|> ... <|end_of_text|>`` token runs."""

from __future__ import annotations

import hashlib
from itertools import chain

import numpy as np

from tinytitan.errors import TinytitanError
from tinytitan.tokenizer import plain_special_tokens

TOKEN_DTYPE = np.uint32  # the Llama 3 vocabulary (128256) does not fit in uint16


class Encoder:
    """Wraps torchtitan's HuggingFaceTokenizer (or a raw ``tokenizers.Tokenizer``).

    ``encode_docs`` returns one flat uint32 array ``BOS doc0 EOS BOS doc1 EOS ...`` and the
    start offset of every document. Pickles to the tokenizer JSON, for loader workers.
    Special-token strings inside a document are plain text (``plain_special_tokens``).
    """

    def __init__(self, tokenizer, bos_id: int | None = None, eos_id: int | None = None):
        raw = getattr(tokenizer, "tokenizer", tokenizer)
        if not hasattr(raw, "encode_batch"):
            raw = None
        self._raw = raw
        self._fallback = tokenizer if raw is None else None
        self.bos_id = bos_id if bos_id is not None else getattr(tokenizer, "bos_id", None)
        self.eos_id = eos_id if eos_id is not None else getattr(tokenizer, "eos_id", None)
        if self.bos_id is None or self.eos_id is None:
            raise TinytitanError(
                "the tokenizer has no BOS/EOS token; give model.hf_assets_path a tokenizer_config.json "
                "with bos_token '<|begin_of_text|>' and eos_token '<|end_of_text|>'"
            )
        self._fast = raw is not None and hasattr(raw, "encode_batch_fast")
        if raw is not None:
            plain_special_tokens(raw)

    # -- pickling for worker processes
    def __getstate__(self):
        if self._raw is None:
            return self.__dict__
        state = dict(self.__dict__)
        state["_raw"] = self._raw.to_str()
        return state

    def __setstate__(self, state):
        if isinstance(state.get("_raw"), str):
            from tokenizers import Tokenizer

            state["_raw"] = Tokenizer.from_str(state["_raw"])
            plain_special_tokens(state["_raw"])  # a runtime flag: to_str() does not carry it
        self.__dict__.update(state)

    def fingerprint(self) -> str:
        """Identifies the tokenizer (vocabulary, merges, normalization) and BOS/EOS ids."""
        if self._raw is not None:
            blob = self._raw.to_str()
        else:
            blob = repr(sorted(self._fallback.get_vocab().items())) if hasattr(self._fallback, "get_vocab") else ""
        h = hashlib.sha256(blob.encode())
        h.update(f"|bos={self.bos_id}|eos={self.eos_id}|special-token strings=plain text".encode())
        return h.hexdigest()

    def ids(self, texts: list[str]) -> list[list[int]]:
        if self._raw is not None:
            if self._fast:
                encs = self._raw.encode_batch_fast(texts, add_special_tokens=False)
            else:
                encs = self._raw.encode_batch(texts, add_special_tokens=False)
            return [e.ids for e in encs]
        return [self._fallback.encode(t, add_bos=False, add_eos=False) for t in texts]

    def encode_docs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.empty(0, TOKEN_DTYPE), np.empty(0, np.int64)
        ids = self.ids(texts)
        lens = np.fromiter((len(x) + 2 for x in ids), np.int64, len(ids))
        ends = np.cumsum(lens)
        starts = ends - lens
        total = int(ends[-1])
        out = np.empty(total, TOKEN_DTYPE)
        body = np.ones(total, bool)
        body[starts] = False
        body[ends - 1] = False
        out[starts] = self.bos_id
        out[ends - 1] = self.eos_id
        out[body] = np.fromiter(chain.from_iterable(ids), TOKEN_DTYPE, total - 2 * len(ids))
        return out, starts

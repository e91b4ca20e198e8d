"""Batch tokenization of documents into ``<|begin_of_text|> ... <|end_of_text|>`` token runs.

A long document goes through the tokenizer in pieces of at most ``PIECE_CHARS`` characters,
and the tokenizer sees at most ``GROUP_CHARS`` characters per call: HF tokenizers hold about
100 bytes per character of a call (1.3 GB for 12 MB of text, so GBs for a 47.5 MB document);
in pieces their buffers are bounded by ``GROUP_CHARS`` (0.3 GB for the same 12 MB).
A piece is cut before a space that sits between two non-space characters: a byte-level BPE
tokenizer with Llama 3's split pattern (the embedded one, and those ``tokenizer_convert``
makes) splits there anyway, so the pieces give exactly the tokens of one call. A text with no
such space within half a piece (base64, a minified line) is cut at the piece length.
"""

from __future__ import annotations

import hashlib

import numpy as np

from tinytitan.errors import TinytitanError
from tinytitan.tokenizer import plain_special_tokens

TOKEN_DTYPE = np.uint32  # the Llama 3 vocabulary (128256) does not fit in uint16
PIECE_CHARS = 1 << 20  # a document longer than this is tokenized in pieces
GROUP_CHARS = 4 << 20  # characters per tokenizer call (a normal fetch of 1 MiB is one call)


def split_long(text: str, piece: int = PIECE_CHARS) -> list[str]:
    """``text`` in pieces of at most ``piece`` characters, each cut before a space between two non-spaces."""
    if len(text) <= piece:
        return [text]
    pieces, start, n = [], 0, len(text)
    while n - start > piece:
        end, low = start + piece, start + piece // 2
        cut = text.rfind(" ", low, end)
        while cut > low and (text[cut - 1].isspace() or text[cut + 1].isspace()):
            cut = text.rfind(" ", low, cut)
        if cut <= low:
            cut = end  # no word boundary nearby: a hard cut
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


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
        self.piece_chars = PIECE_CHARS
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

    def _call(self, texts: list[str]) -> list[list[int]]:
        """One tokenizer call."""
        if self._raw is not None:
            if self._fast:
                encs = self._raw.encode_batch_fast(texts, add_special_tokens=False)
            else:
                encs = self._raw.encode_batch(texts, add_special_tokens=False)
            return [e.ids for e in encs]
        return [self._fallback.encode(t, add_bos=False, add_eos=False) for t in texts]

    def ids(self, texts: list[str]) -> list[np.ndarray]:
        """The token ids of each text (no BOS/EOS): long texts in pieces, at most GROUP_CHARS per call."""
        pieces = [(i, p) for i, text in enumerate(texts) for p in split_long(text, self.piece_chars)]
        parts: list[list[np.ndarray]] = [[] for _ in texts]
        group: list[tuple[int, str]] = []
        size = 0
        for k, (i, piece) in enumerate(pieces):
            group.append((i, piece))
            size += len(piece)
            if size >= GROUP_CHARS or k == len(pieces) - 1:
                for (j, _), got in zip(group, self._call([p for _, p in group]), strict=True):
                    parts[j].append(np.asarray(got, TOKEN_DTYPE))
                group, size = [], 0
        return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]

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
        out[body] = np.concatenate(ids) if ids else np.empty(0, TOKEN_DTYPE)
        return out, starts

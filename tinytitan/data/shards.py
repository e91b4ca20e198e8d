"""Prepared token shards on disk: their layout, the checks before training, and the ``format = "tokens"`` reader.

Training from shards must give exactly the token stream that ``format = "text"`` gives, and a
stale or foreign shard folder must be refused before any step runs. This module holds what
every reader of the shards shares: the layout below, the manifest check (``check_prepared``
at launch, ``plan_from_prepared`` when a loader or validator is built) and the memory-mapped
reader (``TokensBackend``, in ``tinytitan.data.shard_reader``) that loader workers open. The shards are written by
``tinytitan.data.prepare``, which takes the layout from here.

Layout of ``--out DIR``::

    manifest.json                       tokenizer hash, sources, files, document/token counts
    <source>/<file>.tok                 uint32 tokens: BOS doc EOS BOS doc EOS ... (memory-mapped)
    <source>/<file>.idx.npz             document boundaries and positions (see prepare._write_file)
    <source>/<file>.done.json           written last: the file is finished (reruns skip it)
    <source>/validation/<file>.*        the held-out files (validation_files), same format; a file
                                        path that already starts with validation/ is not nested again

Each input file becomes one shard holding its kept documents in file order, tokenized
exactly as the streaming path does. The index remembers where every document sat in the
file (row group, row / line), so the ``tokens`` reader cuts the same parts, applies the
same held-out split and yields the same token stream as the ``text`` reader.

The manifest and the ``.done.json`` records are the typed ``Manifest``/``SourceShards``/
``ShardRecord`` on disk. Manifest versions: 1 (before 2026-12) and 2, which adds
``piece_chars``, the length above which a document was tokenized in pieces
(``tinytitan.data.encode``). A version 1 folder is read as tokenized whole; for the
byte-level BPE tokenizers tinytitan uses the two give the same tokens.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinytitan.data.config import Data, Source, data_config
from tinytitan.data.encode import PIECE_CHARS, TOKEN_DTYPE, Encoder
from tinytitan.data.files import FileInfo
from tinytitan.data.plan import MixturePlan, plan_from_infos
from tinytitan.errors import TinytitanError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2
READABLE_MANIFESTS = (1, 2)
SHARD_VERSION = 1  # the .tok/.idx.npz layout; part of every shard's settings hash


def source_settings(s: Source) -> dict:
    """What the shards of a source depend on (besides the tokenizer and the files)."""
    return {"text_field": s.text_field, "exclude": {k: sorted(map(str, v)) for k, v in s.exclude.items()}}


@dataclass(frozen=True)
class ShardRecord:
    """One finished shard: its ``.done.json``, and its entry in the manifest."""

    rel: str  # the input file, relative to the source's path
    size: int  # the input file's size when it was tokenized
    row_groups: tuple[int, ...] | None  # rows per parquet row group; None: a line file
    docs: int  # documents kept
    tokens: int  # tokens in the .tok file (BOS and EOS included)
    empty: int  # documents with no text
    excluded: int  # documents the exclude filter dropped
    errors: tuple[str, ...]  # why the file could not be read to the end (empty: it could)
    settings: str  # hash of the tokenizer and source settings it was made with

    @property
    def shard_bytes(self) -> int:
        """The size the finished shard's .tok must have."""
        return self.tokens * np.dtype(TOKEN_DTYPE).itemsize

    def to_dict(self) -> dict[str, Any]:
        return {"rel": self.rel, "size": self.size,
                "row_groups": list(self.row_groups) if self.row_groups is not None else None,
                "docs": self.docs, "tokens": self.tokens, "empty": self.empty, "excluded": self.excluded,
                "errors": list(self.errors), "settings": self.settings}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardRecord:
        groups = d["row_groups"]
        return cls(str(d["rel"]), int(d["size"]), tuple(int(g) for g in groups) if groups is not None else None,
                   int(d["docs"]), int(d["tokens"]), int(d["empty"]), int(d["excluded"]),
                   tuple(map(str, d.get("errors", ()))), str(d.get("settings", "")))  # fmt: skip

    def file_info(self) -> FileInfo:
        return FileInfo(self.rel, self.size, self.row_groups)


@dataclass(frozen=True)
class SourceShards:
    """One source in the manifest: what its shards were made from, and the shards."""

    path: str
    files_glob: str
    validation_files_glob: str
    text_field: str
    exclude: dict[str, list[str]]
    files: tuple[ShardRecord, ...]
    validation_files: tuple[ShardRecord, ...] = ()

    def settings(self) -> dict:
        return {"text_field": self.text_field, "exclude": self.exclude}

    @property
    def docs(self) -> int:
        return sum(r.docs for r in self.files)

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.files)

    @property
    def files_with_errors(self) -> list[str]:
        return [r.rel for r in self.files if r.errors]

    def to_dict(self) -> dict[str, Any]:
        # The totals are for people and scripts reading the file; they are recomputed on reading.
        return {"path": self.path, "files_glob": self.files_glob, "validation_files_glob": self.validation_files_glob,
                "text_field": self.text_field, "exclude": self.exclude,
                "files": [r.to_dict() for r in self.files],
                "validation_files": [r.to_dict() for r in self.validation_files],
                "docs": self.docs, "tokens": self.tokens, "empty": sum(r.empty for r in self.files),
                "excluded": sum(r.excluded for r in self.files),
                "files_with_errors": self.files_with_errors}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceShards:
        return cls(str(d["path"]), str(d["files_glob"]), str(d.get("validation_files_glob") or ""),
                   str(d["text_field"]), {str(k): list(v) for k, v in d["exclude"].items()},
                   tuple(ShardRecord.from_dict(r) for r in d["files"]),
                   tuple(ShardRecord.from_dict(r) for r in d.get("validation_files") or ()))  # fmt: skip


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: the tokenizer and every source's shards; written last by ``data prepare``."""

    tokenizer: str  # Encoder.fingerprint() of the tokenizer
    bos_id: int
    eos_id: int
    sources: dict[str, SourceShards] = field(default_factory=dict)
    dtype: str = "uint32"
    piece_chars: int | None = PIECE_CHARS  # longer documents were tokenized in pieces; None: whole (version 1)
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        doc = {"version": self.version, "tokenizer": self.tokenizer, "bos_id": self.bos_id, "eos_id": self.eos_id,
               "dtype": self.dtype, "piece_chars": self.piece_chars,
               "sources": {name: s.to_dict() for name, s in self.sources.items()}}  # fmt: skip
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST) -> Manifest:
        try:
            doc = json.loads(text)
            version = doc.get("version")
            if version not in READABLE_MANIFESTS:
                raise TinytitanError(
                    f"{where} has format version {version}, not one this tinytitan reads "
                    f"({', '.join(map(str, READABLE_MANIFESTS))}); rerun `tinytitan data prepare`"
                )
            return cls(
                tokenizer=str(doc["tokenizer"]),
                bos_id=int(doc["bos_id"]),
                eos_id=int(doc["eos_id"]),
                sources={str(n): SourceShards.from_dict(s) for n, s in doc["sources"].items()},
                dtype=str(doc.get("dtype", "uint32")),
                piece_chars=doc.get("piece_chars") if version >= 2 else None,
                version=MANIFEST_VERSION,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TinytitanError(
                f"{where} is damaged ({type(e).__name__}: {e}); rerun `tinytitan data prepare` into a new --out"
            ) from None


def shard_base(out: str, source: str, rel: str, validation: bool = False) -> str:
    if not validation:
        return os.path.join(out, source, rel)
    inside = rel.split("/", 1)[1] if rel.startswith("validation/") else rel  # SlimPajama's validation/chunk1/...
    base = os.path.join(out, source, "validation", inside)
    doubled = os.path.join(out, source, "validation", rel)  # folders prepared before this layout
    return (
        doubled
        if inside != rel and not os.path.exists(base + ".done.json") and os.path.exists(doubled + ".done.json")
        else base
    )


# ---------------------------------------------------------------- training from shards


def load_manifest(prepared_dir: str) -> Manifest:
    path = os.path.join(prepared_dir, MANIFEST)
    if not os.path.exists(path):
        raise TinytitanError(
            f"data.format = 'tokens' but {path} does not exist; run `tinytitan data prepare --config CFG "
            f"--out {prepared_dir}` first (or set data.format = 'text')"
        )
    with open(path) as f:
        return Manifest.from_json(f.read(), path)


def _check_manifest(data: Data, manifest: Manifest, tokenizer_hash: str | None) -> None:
    where = data.prepared_dir
    rerun = f"rerun `tinytitan data prepare --config CFG --out {where}`"
    if tokenizer_hash is not None and manifest.tokenizer != tokenizer_hash:
        raise TinytitanError(
            f"the token shards in {where} were made with another tokenizer (hash {manifest.tokenizer[:12]}, "
            f"this run's tokenizer {tokenizer_hash[:12]}); {rerun} with this tokenizer"
        )
    if manifest.piece_chars not in (None, PIECE_CHARS):
        raise TinytitanError(
            f"the token shards in {where} cut long documents every {manifest.piece_chars:,} characters, this "
            f"tinytitan every {PIECE_CHARS:,}; {rerun} into a new folder"
        )
    for s in data.sources:
        entry = manifest.sources.get(s.name)
        if entry is None:
            raise TinytitanError(f"data source {s.name!r} is not in the prepared shards in {where}; {rerun}")
        if entry.files_glob != s.files or entry.settings() != source_settings(s):
            raise TinytitanError(
                f"data source {s.name!r}: files, text_field or exclude differ from the prepared shards in {where}; {rerun}"
            )
        if s.validation_files and entry.validation_files_glob != s.validation_files:
            raise TinytitanError(f"data source {s.name!r}: validation_files differ from the prepared shards; {rerun}")
        for rec in entry.files:
            base = shard_base(where, s.name, rec.rel)
            if not os.path.exists(base + ".tok") or not os.path.exists(base + ".idx.npz"):
                raise TinytitanError(f"token shard {base}.tok is missing; {rerun}")
            have, need = os.path.getsize(base + ".tok"), rec.shard_bytes
            if have != need:
                raise TinytitanError(
                    f"token shard {base}.tok has {have:,} bytes but {rec.tokens:,} tokens need {need:,} "
                    f"(a truncated copy or a damaged disk); {rerun} (it redoes only the damaged files)"
                )


def _tokenizer_hash_from_config(job_config) -> str | None:
    path = job_config.model.hf_assets_path
    if not path or not os.path.isdir(path):
        return None
    from tinytitan.tokenizer import load_tokenizer

    return Encoder(load_tokenizer(path)).fingerprint()


def check_prepared(job_config, tokenizer=None) -> None:
    data = data_config(job_config)
    manifest = load_manifest(data.prepared_dir)
    tok_hash = Encoder(tokenizer).fingerprint() if tokenizer is not None else _tokenizer_hash_from_config(job_config)
    _check_manifest(data, manifest, tok_hash)


def plan_from_prepared(data: Data, tokenizer=None) -> MixturePlan:
    data.validate()
    manifest = load_manifest(data.prepared_dir)
    _check_manifest(data, manifest, Encoder(tokenizer).fingerprint() if tokenizer is not None else None)
    return plan_from_infos(
        data, {s.name: [r.file_info() for r in manifest.sources[s.name].files] for s in data.sources}
    )


def summary(manifest: Manifest) -> str:
    lines = [f"tokenizer {manifest.tokenizer[:12]}"]
    for name, e in manifest.sources.items():
        empty, excluded = sum(r.empty for r in e.files), sum(r.excluded for r in e.files)
        lines.append(
            f"{name}: {len(e.files)} files, {e.docs:,} documents, {e.tokens:,} tokens "
            f"({empty} empty, {excluded} excluded, {len(e.files_with_errors)} unreadable files)"
        )
    return "\n".join(lines)

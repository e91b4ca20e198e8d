"""Prepared token shards on disk: their layout, the checks before training, and the ``format = "tokens"`` reader.

Training from shards must give exactly the token stream that ``format = "text"`` gives, and a
stale or foreign shard folder must be refused before any step runs. This module holds what
every reader of the shards shares: the layout below, the manifest check (``check_prepared``
at launch, ``plan_from_prepared`` when a loader or validator is built) and the memory-mapped
reader (``TokensBackend``) that loader workers open. The shards are written by
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
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import numpy as np

from tinytitan.data.config import Data, Source, data_config
from tinytitan.data.encode import TOKEN_DTYPE, Encoder
from tinytitan.data.files import FileInfo, Part, row_range
from tinytitan.data.plan import MixturePlan, SourcePlan, plan_from_infos
from tinytitan.data.text_backend import Fetch
from tinytitan.errors import TinytitanError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_I64 = np.int64


def source_settings(s: Source) -> dict:
    """What the shards of a source depend on (besides the tokenizer and the files)."""
    return {"text_field": s.text_field, "exclude": {k: sorted(map(str, v)) for k, v in s.exclude.items()}}


def shard_bytes(record: dict) -> int:
    """The size a finished shard's .tok must have, from its done/manifest record."""
    return int(record["tokens"]) * np.dtype(TOKEN_DTYPE).itemsize


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


def load_manifest(prepared_dir: str) -> dict:
    path = os.path.join(prepared_dir, MANIFEST)
    if not os.path.exists(path):
        raise TinytitanError(
            f"data.format = 'tokens' but {path} does not exist; run `tinytitan data prepare --config CFG "
            f"--out {prepared_dir}` first (or set data.format = 'text')"
        )
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("version") != FORMAT_VERSION:
        raise TinytitanError(f"{path} has format version {manifest.get('version')}; rerun `tinytitan data prepare`")
    return manifest


def _check_manifest(data: Data, manifest: dict, tokenizer_hash: str | None) -> None:
    where = data.prepared_dir
    rerun = f"rerun `tinytitan data prepare --config CFG --out {where}`"
    if tokenizer_hash is not None and manifest["tokenizer"] != tokenizer_hash:
        raise TinytitanError(
            f"the token shards in {where} were made with another tokenizer (hash {manifest['tokenizer'][:12]}, "
            f"this run's tokenizer {tokenizer_hash[:12]}); {rerun} with this tokenizer"
        )
    for s in data.sources:
        entry = manifest["sources"].get(s.name)
        if entry is None:
            raise TinytitanError(f"data source {s.name!r} is not in the prepared shards in {where}; {rerun}")
        if entry["files_glob"] != s.files or {k: entry[k] for k in source_settings(s)} != source_settings(s):
            raise TinytitanError(
                f"data source {s.name!r}: files, text_field or exclude differ from the prepared shards in {where}; {rerun}"
            )
        if s.validation_files and entry.get("validation_files_glob") != s.validation_files:
            raise TinytitanError(f"data source {s.name!r}: validation_files differ from the prepared shards; {rerun}")
        for rec in entry["files"]:
            base = shard_base(where, s.name, rec["rel"])
            if not os.path.exists(base + ".tok") or not os.path.exists(base + ".idx.npz"):
                raise TinytitanError(f"token shard {base}.tok is missing; {rerun}")
            have, need = os.path.getsize(base + ".tok"), shard_bytes(rec)
            if have != need:
                raise TinytitanError(
                    f"token shard {base}.tok has {have:,} bytes but {rec['tokens']:,} tokens need {need:,} "
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


def _infos(recs: list[dict]) -> list[FileInfo]:
    return [
        FileInfo(r["rel"], r["size"], tuple(r["row_groups"]) if r["row_groups"] is not None else None) for r in recs
    ]


def plan_from_prepared(data: Data, tokenizer=None) -> MixturePlan:
    data.validate()
    manifest = load_manifest(data.prepared_dir)
    _check_manifest(data, manifest, Encoder(tokenizer).fingerprint() if tokenizer is not None else None)
    return plan_from_infos(data, {s.name: _infos(manifest["sources"][s.name]["files"]) for s in data.sources})


class Shard:
    """One memory-mapped shard and its index."""

    def __init__(self, base: str):
        size = os.path.getsize(base + ".tok")
        self.tokens = np.memmap(base + ".tok", dtype=TOKEN_DTYPE, mode="r") if size else np.empty(0, TOKEN_DTYPE)
        with np.load(base + ".idx.npz") as idx:
            self.starts = idx["starts"]
            self.seg = idx["seg"]
            self.raw = idx["raw"]
            self.empty = idx["empty"]
            self.excluded = idx["excluded"]
            self.errors = idx["errors"]
        self.base = base

    def part_docs(self, part: Part, rows: int | None):
        """Kept documents of a part: (indices into the shard, part-local t), plus empty/excluded t's."""

        def local(seg, raw):
            mask = seg == part.segment
            raw = raw[mask]
            if rows is None:
                sel = (raw - part.index) % part.count == 0
                return np.flatnonzero(mask)[sel], (raw[sel] - part.index) // part.count
            lo, hi = row_range(rows, part.index, part.count)
            sel = (raw >= lo) & (raw < hi)
            return np.flatnonzero(mask)[sel], raw[sel] - lo

        kept_idx, kept_t = local(self.seg, self.raw)
        _, empty_t = local(self.empty[:, 0], self.empty[:, 1])
        _, excl_t = local(self.excluded[:, 0], self.excluded[:, 1])
        error_t = None
        for seg, raw in self.errors.tolist():
            if seg == part.segment:
                if rows is None:
                    error_t = max(0, -(-(raw - part.index) // part.count))
                else:
                    lo, _ = row_range(rows, part.index, part.count)
                    error_t = max(0, raw - lo)
        return kept_idx, kept_t, empty_t, excl_t, error_t


class TokensPartStream:
    """Reads one part from a shard; returns views of the memory map where documents are contiguous."""

    def __init__(self, shard: Shard, src: SourcePlan, part_index: int, start: int, count_from: int, budget: int):
        part = src.parts[part_index]
        self.shard = shard
        self.name = shard.base
        kept_idx, kept_t, empty_t, excl_t, error_t = shard.part_docs(part, src.segment_rows(part))
        lo_t = max(start, src.holdout_t(part))
        sel = kept_t >= lo_t
        self.idx, self.t = kept_idx[sel], kept_t[sel]
        self.empty_t = np.sort(empty_t[(empty_t >= lo_t) & (empty_t >= count_from)])
        self.excl_t = np.sort(excl_t[(excl_t >= lo_t) & (excl_t >= count_from)])
        self.error_t = error_t
        self.count_from = count_from
        self.pos = 0
        self.next_t = start
        self.budget = budget

    def fetch(self) -> Fetch:
        idx, ts, sh = self.idx, self.t, self.shard
        a = self.pos
        if a < len(idx):
            # take documents up to the token budget (at least one)
            first = sh.starts[idx[a]]
            ahead = idx[a : a + 65536]
            limit = np.searchsorted(sh.starts[ahead + 1] - first, self.budget, side="right")
            b = a + max(1, int(limit))
            sel = idx[a:b]
            lens = sh.starts[sel + 1] - sh.starts[sel]
            if sel[-1] - sel[0] == b - a - 1:  # contiguous in the shard: a view
                tokens = sh.tokens[sh.starts[sel[0]] : sh.starts[sel[-1] + 1]]
            else:
                tokens = np.concatenate([sh.tokens[sh.starts[i] : sh.starts[i + 1]] for i in sel.tolist()])
            starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(_I64)
            doc_t = ts[a:b]
            self.pos = b
            done = b == len(idx)
            lo_t, hi_t = self.next_t, int(doc_t[-1]) + 1
        else:
            tokens, starts, doc_t = np.empty(0, TOKEN_DTYPE), np.empty(0, _I64), np.empty(0, _I64)
            done = True
            lo_t, hi_t = self.next_t, self.next_t
        if done:  # trailing empty/excluded documents belong to this fetch
            hi_t = max(
                hi_t,
                int(self.empty_t[-1]) + 1 if self.empty_t.size else 0,
                int(self.excl_t[-1]) + 1 if self.excl_t.size else 0,
            )
        empty = int(((self.empty_t >= lo_t) & (self.empty_t < hi_t)).sum())
        excluded = int(((self.excl_t >= lo_t) & (self.excl_t < hi_t)).sum())
        docs = int((doc_t >= self.count_from).sum())
        error = None
        error_t = 0
        if done and self.error_t is not None:
            error = f"{self.name}: the source file could not be read to the end when it was prepared"
            error_t = max(self.error_t, self.next_t)
        self.next_t = hi_t
        return Fetch(tokens, starts, doc_t, hi_t, done, docs, empty, excluded, error, error_t)

    def close(self):
        pass


class TokensBackend:
    """Parts come from the memory-mapped shards of ``prepared_dir``."""

    def __init__(self, prepared_dir: str, budget_tokens: int = 1 << 20, cache: int = 64):
        self.dir = prepared_dir
        self.budget = budget_tokens
        self.cache: OrderedDict[str, Shard] = OrderedDict()
        self.cache_size = cache

    def shard(self, src: SourcePlan, rel: str) -> Shard:
        base = shard_base(self.dir, src.name, rel)
        sh = self.cache.get(base)
        if sh is None:
            sh = Shard(base)
            self.cache[base] = sh
            if len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(base)
        return sh

    def open(self, src: SourcePlan, part_index: int, start: int, count_from: int):
        part = src.parts[part_index]
        return TokensPartStream(
            self.shard(src, src.files[part.file].rel), src, part_index, start, count_from, self.budget
        )


def summary(manifest: dict) -> str:
    lines = [f"tokenizer {manifest['tokenizer'][:12]}"]
    for name, e in manifest["sources"].items():
        lines.append(
            f"{name}: {len(e['files'])} files, {e['docs']:,} documents, {e['tokens']:,} tokens "
            f"({e['empty']} empty, {e['excluded']} excluded, {len(e['files_with_errors'])} unreadable files)"
        )
    return "\n".join(lines)

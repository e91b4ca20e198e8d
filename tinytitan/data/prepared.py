"""Prepared token shards: ``tinytitan data prepare`` and the ``format = "tokens"`` reader.

Layout of ``--out DIR``::

    manifest.json                       tokenizer hash, sources, files, document/token counts
    <source>/<file>.tok                 uint32 tokens: BOS doc EOS BOS doc EOS ... (memory-mapped)
    <source>/<file>.idx.npz             document boundaries and positions (see _write_file)
    <source>/<file>.done.json           written last: the file is finished (reruns skip it)
    <source>/validation/<file>.*        the held-out files (validation_files), same format

Each input file becomes one shard holding its kept documents in file order, tokenized
exactly as the streaming path does. The index remembers where every document sat in the
file (row group, row / line), so the ``tokens`` reader cuts the same parts, applies the
same held-out split and yields the same token stream as the ``text`` reader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from tinytitan.data.config import Data, Source, data_config, hub_repo, list_files, validate_sources
from tinytitan.data.files import FileInfo, Filter, Opener, Part, ReadError, file_info, iter_part, row_range
from tinytitan.data.mixture import Fetch
from tinytitan.data.plan import MixturePlan, SourcePlan, plan_from_infos
from tinytitan.data.tok import TOKEN_DTYPE, Encoder
from tinytitan.errors import TinytitanError

logger = logging.getLogger("tinytitan.data")

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_I64 = np.int64


def source_settings(s: Source) -> dict:
    """What the shards of a source depend on (besides the tokenizer and the files)."""
    return {"text_field": s.text_field, "exclude": {k: sorted(map(str, v)) for k, v in s.exclude.items()}}


def _settings_hash(s: Source, tokenizer_hash: str) -> str:
    blob = json.dumps(
        {"settings": source_settings(s), "tokenizer": tokenizer_hash, "v": FORMAT_VERSION}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def shard_base(out: str, source: str, rel: str, validation: bool = False) -> str:
    return os.path.join(out, source, "validation", rel) if validation else os.path.join(out, source, rel)


# ---------------------------------------------------------------- prepare (one file)


def _write_file(task: dict) -> dict:
    """Tokenize one input file into a shard. Runs in a worker process."""
    encoder: Encoder = _WORKER["encoder"]
    opener = Opener(task["path"], task["hub_repo"])
    filt = Filter(task["text_field"], task["exclude"])
    info = FileInfo(task["rel"], task["size"], tuple(task["row_groups"]) if task["row_groups"] is not None else None)
    base = task["base"]
    os.makedirs(os.path.dirname(base), exist_ok=True)
    tmp_tok = base + ".tok.tmp"
    starts: list[np.ndarray] = []
    seg_kept: list[int] = []
    raw_kept: list[int] = []
    empty: list[tuple[int, int]] = []
    excluded: list[tuple[int, int]] = []
    errors: list[tuple[int, int, str]] = []  # (segment, raw index of the first unread document, message)
    n_tokens = 0
    budget = task["budget"]
    with open(tmp_tok, "wb") as out:

        def flush(texts, where):
            nonlocal n_tokens
            if not texts:
                return
            tokens, st = encoder.encode_docs(texts)
            out.write(tokens.tobytes())
            starts.append(st + n_tokens)
            n_tokens += int(tokens.size)
            for seg, raw in where:
                seg_kept.append(seg)
                raw_kept.append(raw)

        for seg in range(info.segments):
            texts: list[str] = []
            where: list[tuple[int, int]] = []
            size = 0
            next_raw = 0
            try:
                for raw, text in iter_part(opener, info, Part(0, seg, 0, 1), 0, filt):
                    next_raw = raw + 1
                    if text is None:
                        excluded.append((seg, raw))
                    elif not text or text.isspace():
                        empty.append((seg, raw))
                    else:
                        texts.append(text)
                        where.append((seg, raw))
                        size += len(text)
                        if size >= budget:
                            flush(texts, where)
                            texts, where, size = [], [], 0
            except ReadError as e:
                errors.append((seg, next_raw, str(e)))
            flush(texts, where)
    doc_starts = np.concatenate(starts) if starts else np.empty(0, _I64)
    np.savez(
        base + ".idx.tmp.npz",
        starts=np.append(doc_starts, n_tokens).astype(_I64),
        seg=np.asarray(seg_kept, _I64),
        raw=np.asarray(raw_kept, _I64),
        empty=np.asarray(empty, _I64).reshape(-1, 2),
        excluded=np.asarray(excluded, _I64).reshape(-1, 2),
        errors=np.asarray([(s, r) for s, r, _ in errors], _I64).reshape(-1, 2),
    )
    os.replace(tmp_tok, base + ".tok")
    os.replace(base + ".idx.tmp.npz", base + ".idx.npz")
    record = {
        "rel": info.rel,
        "size": info.size,
        "row_groups": list(info.row_groups) if info.row_groups is not None else None,
        "docs": len(raw_kept),
        "tokens": n_tokens,
        "empty": len(empty),
        "excluded": len(excluded),
        "errors": [msg for _, _, msg in errors],
        "settings": task["settings_hash"],
    }
    with open(base + ".done.json.tmp", "w") as f:
        json.dump(record, f)
    os.replace(base + ".done.json.tmp", base + ".done.json")
    return record


_WORKER: dict[str, Any] = {}


def _init_worker(encoder: Encoder) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER["encoder"] = encoder


def _done_record(base: str, size: int, settings_hash: str) -> dict | None:
    try:
        with open(base + ".done.json") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if rec.get("size") != size or rec.get("settings") != settings_hash:
        return None
    if not (os.path.exists(base + ".tok") and os.path.exists(base + ".idx.npz")):
        return None
    return rec


def prepare(
    data: Data,
    tokenizer,
    out: str,
    *,
    workers: int = 1,
    budget: int = 1 << 20,
    progress: bool = True,
) -> dict:
    """Tokenizes every source (training and validation files) into ``out``. Returns the manifest."""
    files = validate_sources(data)
    encoder = Encoder(tokenizer)
    tok_hash = encoder.fingerprint()
    os.makedirs(out, exist_ok=True)
    old = os.path.join(out, MANIFEST)
    if os.path.exists(old):
        with open(old) as f:
            prev = json.load(f)
        if prev.get("tokenizer") != tok_hash:
            raise TinytitanError(
                f"{out} holds shards made with another tokenizer; write to a new --out folder or delete it"
            )
    tasks: list[dict] = []
    done: dict[tuple[str, bool, str], dict] = {}
    infos: dict[tuple[str, bool], list[FileInfo]] = {}
    for s in data.sources:
        settings_hash = _settings_hash(s, tok_hash)
        opener = Opener(s.path, hub_repo(s.path))
        for validation, rels in (
            (False, files[s.name]),
            (True, list_files(s.path, s.validation_files) if s.validation_files else []),
        ):
            infos[(s.name, validation)] = [file_info(opener, r) for r in rels]
            for info in infos[(s.name, validation)]:
                base = shard_base(out, s.name, info.rel, validation)
                rec = _done_record(base, info.size, settings_hash)
                if rec is not None:
                    done[(s.name, validation, info.rel)] = rec
                    continue
                tasks.append(
                    {
                        "source": s.name,
                        "validation": validation,
                        "path": s.path,
                        "hub_repo": hub_repo(s.path),
                        "rel": info.rel,
                        "size": info.size,
                        "row_groups": list(info.row_groups) if info.row_groups is not None else None,
                        "text_field": s.text_field,
                        "exclude": s.exclude,
                        "base": base,
                        "budget": budget,
                        "settings_hash": settings_hash,
                    }
                )
    total_files = len(tasks) + len(done)
    logger.info("data prepare: %d files, %d already done, %d to tokenize", total_files, len(done), len(tasks))
    tasks.sort(key=lambda t: -t["size"])  # big files first: better balance
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(t["size"] for t in tasks), unit="B", unit_scale=True, desc="tokenizing", smoothing=0.05)
    n_tokens = 0
    started = time.perf_counter()
    try:
        if workers <= 1 or len(tasks) <= 1:
            _init_worker(encoder)
            results = map(_write_file, tasks)
            results = ((t, r) for t, r in zip(tasks, results, strict=True))
            for task, rec in results:
                done[(task["source"], task["validation"], task["rel"])] = rec
                n_tokens += rec["tokens"]
                if bar is not None:
                    bar.update(task["size"])
                    bar.set_postfix(tokens=f"{n_tokens:,}")
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(encoder,)) as pool:
                for task, rec in zip(tasks, pool.imap(_write_file, tasks), strict=True):
                    done[(task["source"], task["validation"], task["rel"])] = rec
                    n_tokens += rec["tokens"]
                    if bar is not None:
                        bar.update(task["size"])
                        bar.set_postfix(tokens=f"{n_tokens:,}")
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    manifest = {
        "version": FORMAT_VERSION,
        "tokenizer": tok_hash,
        "bos_id": encoder.bos_id,
        "eos_id": encoder.eos_id,
        "dtype": "uint32",
        "sources": {},
    }
    for s in data.sources:
        entry = {
            "path": s.path,
            "files_glob": s.files,
            "validation_files_glob": s.validation_files,
            **source_settings(s),
        }
        for validation, key in ((False, "files"), (True, "validation_files")):
            recs = [done[(s.name, validation, info.rel)] for info in infos[(s.name, validation)]]
            entry[key] = recs
        train = entry["files"]
        entry["docs"] = sum(r["docs"] for r in train)
        entry["tokens"] = sum(r["tokens"] for r in train)
        entry["empty"] = sum(r["empty"] for r in train)
        entry["excluded"] = sum(r["excluded"] for r in train)
        entry["files_with_errors"] = [r["rel"] for r in train if r["errors"]]
        manifest["sources"][s.name] = entry
    tmp = os.path.join(out, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(out, MANIFEST))
    for name, entry in manifest["sources"].items():
        for rel in entry["files_with_errors"]:
            logger.warning("data prepare: source %r: %s could not be read to the end", name, rel)
    logger.info("data prepare: %d tokens tokenized in %.1fs", n_tokens, elapsed)
    return manifest


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


def _tokenizer_hash_from_config(job_config) -> str | None:
    model = getattr(job_config, "model", None)
    path = getattr(model, "hf_assets_path", None) if model is not None else None
    if not path or not os.path.isdir(path):
        return None
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    return Encoder(HuggingFaceTokenizer(path)).fingerprint()


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
    validate_sources(data, check_files=False)
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

"""``tinytitan data prepare``: tokenize the configured sources once, ahead of training.

Tokenizing while streaming costs CPU on every training run; a prepared folder is tokenized
once and then memory-mapped by every run with ``data.format = "tokens"``. Writing is kept
apart from reading (``tinytitan.data.shards``, which defines the layout and reads it) because
only the ``data prepare`` command needs it: it tokenizes each input file into one shard in a
pool of worker processes, skips files a previous run already finished (``.done.json``), and
writes the manifest last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np

from tinytitan.data.config import Data, Source
from tinytitan.data.encode import Encoder
from tinytitan.data.files import FileInfo, Filter, Opener, Part, ReadError, file_info, iter_part
from tinytitan.data.listing import hub_repo, list_files, list_sources
from tinytitan.data.shards import FORMAT_VERSION, MANIFEST, shard_base, shard_bytes, source_settings
from tinytitan.errors import TinytitanError

logger = logging.getLogger("tinytitan.data")

_I64 = np.int64


def _settings_hash(s: Source, tokenizer_hash: str) -> str:
    blob = json.dumps(
        {"settings": source_settings(s), "tokenizer": tokenizer_hash, "v": FORMAT_VERSION}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    if os.path.getsize(base + ".tok") != shard_bytes(rec):  # truncated since: tokenize it again
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
    data.validate()
    files = list_sources(data)
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

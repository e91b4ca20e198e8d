"""``tinytitan data prepare``: tokenize the configured sources once, ahead of training.

Tokenizing while streaming costs CPU on every training run; a prepared folder is tokenized
once and then memory-mapped by every run with ``data.format = "tokens"``. Writing is kept
apart from reading (``tinytitan.data.shards``, which defines the layout and reads it) because
only the ``data prepare`` command needs it: it tokenizes each input file into one shard in a
pool of worker processes (each file a ``PrepareTask``), skips files a previous run already
finished (``.done.json``), and writes the manifest last.

A disk that fills up is named with the folder and about how much the shards need; the file
being written is removed (no ``*.tmp`` is left), and a rerun continues from the finished files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinytitan.data.config import Data, Source
from tinytitan.data.encode import Encoder
from tinytitan.data.files import FileInfo, Filter, Opener, Part, ReadError, file_info, iter_part
from tinytitan.data.listing import hub_repo, list_files, list_sources
from tinytitan.data.shards import (
    MANIFEST,
    SHARD_VERSION,
    Manifest,
    ShardRecord,
    SourceShards,
    load_manifest,
    shard_base,
    source_settings,
)
from tinytitan.errors import TinytitanError
from tinytitan.folders import free_bytes

logger = logging.getLogger("tinytitan.data")

_I64 = np.int64


def _settings_hash(s: Source, tokenizer_hash: str) -> str:
    blob = json.dumps({"settings": source_settings(s), "tokenizer": tokenizer_hash, "v": SHARD_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- prepare (one file)

_TMP_SUFFIXES = (".tok.tmp", ".idx.tmp.npz", ".done.json.tmp")


@dataclass(frozen=True)
class PrepareTask:
    """One input file to tokenize into one shard (sent to a worker process)."""

    source: str
    validation: bool  # a held-out file (validation_files)
    path: str  # the source's folder or Hub id
    hub_repo: str | None
    file: FileInfo
    text_field: str
    exclude: dict[str, list[str]]
    base: str  # the shard's path without its suffixes
    budget: int  # characters of text per tokenizer batch
    settings_hash: str

    def remove_partial(self) -> None:
        """Deletes what an unfinished write of this shard left."""
        for suffix in _TMP_SUFFIXES:
            try:
                os.unlink(self.base + suffix)
            except FileNotFoundError:
                pass


def _write_file(task: PrepareTask) -> ShardRecord:
    """Tokenize one input file into a shard. Runs in a worker process; leaves no temporary file if it fails."""
    try:
        return _write_shard(task)
    except BaseException:
        task.remove_partial()
        raise


def _write_shard(task: PrepareTask) -> ShardRecord:
    encoder: Encoder = _WORKER["encoder"]
    opener = Opener(task.path, task.hub_repo)
    filt = Filter(task.text_field, task.exclude)
    info = task.file
    base = task.base
    os.makedirs(os.path.dirname(base), exist_ok=True)
    tmp_tok = base + ".tok.tmp"
    starts: list[np.ndarray] = []
    seg_kept: list[int] = []
    raw_kept: list[int] = []
    empty: list[tuple[int, int]] = []
    excluded: list[tuple[int, int]] = []
    errors: list[tuple[int, int, str]] = []  # (segment, raw index of the first unread document, message)
    n_tokens = 0
    budget = task.budget
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
    record = ShardRecord(info.rel, info.size, info.row_groups, len(raw_kept), n_tokens, len(empty), len(excluded),
                         tuple(msg for _, _, msg in errors), task.settings_hash)  # fmt: skip
    with open(base + ".done.json.tmp", "w") as f:
        json.dump(record.to_dict(), f)
    os.replace(base + ".done.json.tmp", base + ".done.json")
    return record


_WORKER: dict[str, Any] = {}


def _init_worker(encoder: Encoder) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER["encoder"] = encoder


def _done_record(base: str, size: int, settings_hash: str) -> ShardRecord | None:
    try:
        with open(base + ".done.json") as f:
            rec = ShardRecord.from_dict(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if rec.size != size or rec.settings != settings_hash:
        return None
    if not (os.path.exists(base + ".tok") and os.path.exists(base + ".idx.npz")):
        return None
    if os.path.getsize(base + ".tok") != rec.shard_bytes:  # truncated since: tokenize it again
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
) -> Manifest:
    """Tokenizes every source (training and validation files) into ``out``. Returns the manifest."""
    data.validate()
    files = list_sources(data)
    encoder = Encoder(tokenizer)
    tok_hash = encoder.fingerprint()
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, MANIFEST)) and load_manifest(out).tokenizer != tok_hash:
        raise TinytitanError(
            f"{out} holds shards made with another tokenizer; write to a new --out folder or delete it"
        )
    tasks: list[PrepareTask] = []
    done: dict[tuple[str, bool, str], ShardRecord] = {}
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
                tasks.append(PrepareTask(s.name, validation, s.path, hub_repo(s.path), info, s.text_field,
                                         s.exclude, base, budget, settings_hash))  # fmt: skip
    total_files = len(tasks) + len(done)
    logger.info("data prepare: %d files, %d already done, %d to tokenize", total_files, len(done), len(tasks))
    tasks.sort(key=lambda t: -t.file.size)  # big files first: better balance
    started = time.perf_counter()
    try:
        n_tokens = _run_tasks(tasks, encoder, workers, progress, done)
    except OSError as e:
        for task in tasks:  # a pool stopped mid-file leaves its workers' temporary files
            task.remove_partial()
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(e, out, tasks, done) from None
        raise
    except BaseException:
        for task in tasks:
            task.remove_partial()
        raise
    elapsed = time.perf_counter() - started
    manifest = Manifest(tok_hash, encoder.bos_id, encoder.eos_id)
    for s in data.sources:
        shards = {v: tuple(done[(s.name, v, info.rel)] for info in infos[(s.name, v)]) for v in (False, True)}
        settings = source_settings(s)
        manifest.sources[s.name] = SourceShards(s.path, s.files, s.validation_files, settings["text_field"],
                                                settings["exclude"], shards[False], shards[True])  # fmt: skip
    _write_manifest(manifest, out, tasks, done)
    for name, entry in manifest.sources.items():
        for rel in entry.files_with_errors:
            logger.warning("data prepare: source %r: %s could not be read to the end", name, rel)
    logger.info("data prepare: %d tokens tokenized in %.1fs", n_tokens, elapsed)
    return manifest


def _run_tasks(tasks: list[PrepareTask], encoder: Encoder, workers: int, progress: bool, done: dict) -> int:
    """Runs every task (in this process, or a pool of ``workers``); records land in ``done``. Returns the tokens."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(t.file.size for t in tasks), unit="B", unit_scale=True, desc="tokenizing", smoothing=0.05)
    n_tokens = 0
    try:
        if workers <= 1 or len(tasks) <= 1:
            _init_worker(encoder)
            pairs = ((t, _write_file(t)) for t in tasks)
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(encoder,))
            pairs = zip(tasks, pool.imap(_write_file, tasks), strict=True)
        try:
            for task, rec in pairs:
                done[(task.source, task.validation, task.file.rel)] = rec
                n_tokens += rec.tokens
                if bar is not None:
                    bar.update(task.file.size)
                    bar.set_postfix(tokens=f"{n_tokens:,}")
        finally:
            if pool is not None:
                pool.terminate()  # on a failure, the other workers stop too (their files are removed after)
                pool.join()
    finally:
        if bar is not None:
            bar.close()
    return n_tokens


def _write_manifest(manifest: Manifest, out: str, tasks: list[PrepareTask], done: dict) -> None:
    tmp = os.path.join(out, MANIFEST + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(manifest.to_json())
        os.replace(tmp, os.path.join(out, MANIFEST))
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(e, out, tasks, done) from None
        raise


# Shard bytes per input byte when no finished file shows it yet: uint32 tokens of ~4 characters
# take about as much as plain JSON text, and ~4x what zstd/gzip/parquet compress it to.
_ASSUMED_RATIO = {"plain": 1.0, "zst": 4.0, "gz": 4.0, "parquet": 4.0}


def _disk_full(e: OSError, out: str, tasks: list[PrepareTask], done: dict) -> TinytitanError:
    """The folder, about how much the shards need, and what is kept."""
    finished = list(done.values())
    written = sum(r.shard_bytes for r in finished)
    measured = sum(r.size for r in finished)
    pending = [t for t in tasks if (t.source, t.validation, t.file.rel) not in done]
    if measured:
        estimate = written + sum(t.file.size for t in pending) * written / measured
        how = f"measured on the {len(finished)} finished file(s)"
    else:
        estimate = sum(t.file.size * _ASSUMED_RATIO.get(t.file.kind, 4.0) for t in pending)
        how = "estimated from the input sizes"
    kept = (
        f"the {len(finished)} finished file(s) are kept: a rerun tokenizes only the rest"
        if finished
        else "no file was finished"
    )
    return TinytitanError(
        f"no space left in {os.path.abspath(out)} ({e.strerror}): the token shards need about {_mib(estimate)} "
        f"in all ({how}), {_mib(free_bytes(out))} is free there; free space or choose another --out ({kept})"
    )


def _mib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

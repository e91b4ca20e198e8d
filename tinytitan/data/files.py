"""Reading documents out of local (or Hub) files: .jsonl, .jsonl.zst, .json(l).gz, .parquet.

The unit of reading is a *part*: a slice of one segment of one file. A segment is a whole
line-based file, or one row group of a parquet file. When a source has fewer segments than
lanes, segments are split into parts: parquet row groups into contiguous row ranges, line
files by document index modulo the number of parts (a compressed stream cannot be entered in
the middle, so each of those readers decompresses the file but parses only its documents).

``iter_part`` yields ``(t, text)`` pairs where ``t`` is the document's index inside the part
(0, 1, 2, ...) and ``text`` is None for a document dropped by the exclude filter. Resuming at
document ``t`` of a part therefore needs no state beyond ``t``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("tinytitan.data")

try:  # orjson parses JSON lines 2-3x faster when present
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    _loads = json.loads


def file_kind(name: str) -> str:
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".zst"):
        return "zst"
    if name.endswith(".gz"):
        return "gz"
    return "plain"


@dataclass(frozen=True)
class FileInfo:
    rel: str  # path relative to the source path, '/'-separated
    size: int
    row_groups: tuple[int, ...] | None  # rows per row group (parquet); None: line-based

    @property
    def kind(self) -> str:
        return file_kind(self.rel)

    @property
    def segments(self) -> int:
        return max(1, len(self.row_groups)) if self.row_groups is not None else 1


@dataclass(frozen=True)
class Part:
    """A slice of one segment of one file."""

    file: int  # index into the source's file list
    segment: int  # row group (parquet) or 0
    index: int  # which part of the segment
    count: int  # how many parts the segment is split into

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.file, self.segment, self.index, self.count)


def row_range(rows: int, index: int, count: int) -> tuple[int, int]:
    return rows * index // count, rows * (index + 1) // count


# ---------------------------------------------------------------- file systems


class Opener:
    """Opens files of one source: local paths or a Hub dataset repository."""

    def __init__(self, path: str, hub_repo: str | None):
        self.path = path
        self.hub_repo = hub_repo
        self._fs = None

    def full(self, rel: str) -> str:
        if self.hub_repo is not None:
            return f"hf://datasets/{self.hub_repo}/{rel}"
        return os.path.join(self.path, rel)

    def open(self, rel: str):
        if self.hub_repo is None:
            return open(os.path.join(self.path, rel), "rb")
        if self._fs is None:
            from huggingface_hub import HfFileSystem

            self._fs = HfFileSystem()
        return self._fs.open(f"datasets/{self.hub_repo}/{rel}", "rb", block_size=8 << 20)

    def size(self, rel: str) -> int:
        if self.hub_repo is None:
            return os.path.getsize(os.path.join(self.path, rel))
        if self._fs is None:
            from huggingface_hub import HfFileSystem

            self._fs = HfFileSystem()
        return int(self._fs.info(f"datasets/{self.hub_repo}/{rel}").get("size", 0))

    def __getstate__(self):
        return {"path": self.path, "hub_repo": self.hub_repo, "_fs": None}


def file_info(opener: Opener, rel: str) -> FileInfo:
    size = opener.size(rel)
    if file_kind(rel) != "parquet":
        return FileInfo(rel, size, None)
    import pyarrow.parquet as pq

    try:
        with opener.open(rel) as f:
            meta = pq.ParquetFile(f).metadata
            groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    except Exception:  # unreadable: one segment, and reading it reports the error
        groups = ()
    return FileInfo(rel, size, groups)


# ---------------------------------------------------------------- records


def get_field(record: Any, dotted: str) -> Any:
    """record['a']['b'] for 'a.b'; a literal key containing dots wins."""
    if isinstance(record, dict) and dotted in record:
        return record[dotted]
    value = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


class Filter:
    """Picks the text out of a record and applies the exclude rules."""

    def __init__(self, text_field: str, exclude: dict[str, list[str]]):
        self.text_field = text_field
        self.exclude = {k: {str(v) for v in vals} for k, vals in exclude.items()}

    def columns(self) -> list[str]:
        """Top-level columns a parquet reader needs."""
        cols = [self.text_field.split(".")[0]]
        for k in self.exclude:
            c = k.split(".")[0]
            if c not in cols:
                cols.append(c)
        return cols

    def text(self, record: dict) -> str | None:
        """None: excluded. '' for a missing or empty text."""
        for key, values in self.exclude.items():
            if str(get_field(record, key)) in values:
                return None
        value = get_field(record, self.text_field)
        return value if isinstance(value, str) else ""


class ReadError(Exception):
    """A file could not be read; carries the file name."""


_CHUNK = 1 << 20


def _zst_chunks(f) -> Iterator[bytes]:
    """Decompressed chunks of a (multi-frame) zstd stream; raises on a truncated stream."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    d = dctx.decompressobj()
    pending = False  # a frame has started and not ended
    while True:
        buf = f.read(_CHUNK)
        if not buf:
            break
        while buf:
            out = d.decompress(buf)
            pending = True
            if out:
                yield out
            if d.eof:
                pending = False
                buf = d.unused_data
                d = dctx.decompressobj()
            else:
                buf = b""
    if pending:
        raise ValueError("truncated zstd stream (the file ends inside a frame)")


def _raw_chunks(opener: Opener, info: FileInfo) -> Iterator[bytes]:
    with opener.open(info.rel) as f:
        kind = info.kind
        if kind == "zst":
            yield from _zst_chunks(f)
        elif kind == "gz":
            with gzip.GzipFile(fileobj=f) as g:
                while chunk := g.read(_CHUNK):
                    yield chunk
        else:
            while chunk := f.read(_CHUNK):
                yield chunk


def iter_lines(opener: Opener, info: FileInfo) -> Iterator[bytes]:
    """Lines of a line-based file (without the newline), decompressing on the fly.

    A line longer than a chunk is kept as a list of its chunks and joined once at its end:
    re-joining and re-splitting it at every chunk made a 47.5 MB line cost minutes.
    """
    head: list[bytes] = []  # the chunks of a line that has not ended yet
    for chunk in _raw_chunks(opener, info):
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            head.append(chunk)
            continue
        if head:
            head.append(lines[0])
            lines[0] = b"".join(head)
        tail = lines.pop()
        head = [tail] if tail else []
        yield from lines
    if head:
        yield b"".join(head)


class _LineCache:
    """Decompressed lines of small files that several strided parts read (a source with fewer
    files than lanes): each part then scans memory instead of decompressing the file again."""

    def __init__(self, max_bytes: int = 256 << 20, max_file: int = 64 << 20):
        self.max_bytes, self.max_file = max_bytes, max_file
        self.entries: OrderedDict[str, tuple[list[bytes], str | None, int]] = OrderedDict()
        self.bytes = 0

    def get(self, opener: Opener, info: FileInfo) -> tuple[list[bytes], str | None]:
        key = opener.full(info.rel)
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
            return hit[0], hit[1]
        lines: list[bytes] = []
        error = None
        try:
            lines.extend(iter_lines(opener, info))
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        size = sum(len(x) for x in lines) + 64 * len(lines)
        if size <= self.max_file:
            self.entries[key] = (lines, error, size)
            self.bytes += size
            while self.bytes > self.max_bytes and len(self.entries) > 1:
                _, (_, _, n) = self.entries.popitem(last=False)
                self.bytes -= n
        return lines, error


_LINES = _LineCache()
_CACHE_BELOW = 16 << 20  # cache files smaller than this (on disk) when they are split into parts


def _iter_lines(opener: Opener, info: FileInfo, part: Part, start: int, filt: Filter) -> Iterator[tuple[int, Any]]:
    count, index = part.count, part.index
    first = start * count + index  # first raw line wanted
    error = None
    if count > 1 and info.size < _CACHE_BELOW:
        cached, error = _LINES.get(opener, info)
        lines: Any = ((raw, cached[raw]) for raw in range(first, len(cached), count))
    else:
        lines = (
            (raw, line)
            for raw, line in enumerate(iter_lines(opener, info))
            if raw >= first and (raw - index) % count == 0
        )
    for raw, line in lines:
        t = (raw - index) // count
        if not line.strip():
            yield t, ""
            continue
        try:
            record = _loads(line)
        except ValueError:
            logger.warning("skipping a malformed JSON line (line %d) in %s", raw + 1, opener.full(info.rel))
            yield t, ""
            continue
        yield t, filt.text(record) if isinstance(record, dict) else ""
    if error is not None:
        raise ReadError(error)


def _iter_parquet(opener: Opener, info: FileInfo, part: Part, start: int, filt: Filter) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    with opener.open(info.rel) as f:
        pf = pq.ParquetFile(f)  # raises for a corrupt file
        if part.segment >= pf.metadata.num_row_groups:
            raise ReadError(f"row group {part.segment} missing ({pf.metadata.num_row_groups} row groups)")
        rows = pf.metadata.row_group(part.segment).num_rows
        lo, hi = row_range(rows, part.index, part.count)
        if lo + start >= hi:
            return
        names = set(pf.schema_arrow.names)
        text_col = filt.text_field.split(".")[0]
        if text_col not in names:
            raise ReadError(f"no column {text_col!r} (columns: {', '.join(sorted(names))})")
        cols = [c for c in filt.columns() if c in names]
        table = pf.read_row_group(part.segment, columns=cols).slice(lo + start, hi - lo - start)
        if "." in filt.text_field or filt.exclude:
            for t, rec in enumerate(table.to_pylist(), start):
                yield t, filt.text(rec)
        else:
            for t, value in enumerate(table.column(text_col).to_pylist(), start):
                yield t, value if isinstance(value, str) else ""


def iter_part(opener: Opener, info: FileInfo, part: Part, start: int, filt: Filter) -> Iterator[tuple[int, Any]]:
    """Documents of `part` from index `start` on. Raises ReadError(file) on any read failure."""
    gen = _iter_parquet if info.kind == "parquet" else _iter_lines
    try:
        yield from gen(opener, info, part, start, filt)
    except ReadError as e:
        raise ReadError(f"{opener.full(info.rel)}: {e}") from e
    except (GeneratorExit, KeyboardInterrupt):
        raise
    except Exception as e:
        raise ReadError(f"{opener.full(info.rel)}: {type(e).__name__}: {e}") from e


def iter_file(opener: Opener, info: FileInfo, filt: Filter) -> Iterator[tuple[int, int, Any]]:
    """Every document of a file in order: (segment, raw index in segment, text or None)."""
    for seg in range(info.segments):
        for t, text in iter_part(opener, info, Part(0, seg, 0, 1), 0, filt):
            yield seg, t, text

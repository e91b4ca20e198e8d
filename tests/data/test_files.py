"""Readers for every supported file type, and what counts as a corrupt file."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tinytitan.data.files import Filter, Opener, Part, ReadError, file_info, iter_file, iter_part

RECORDS = [
    {"text": "alpha", "meta": {"redpajama_set_name": "RedPajamaC4"}},
    {"text": "", "meta": {"redpajama_set_name": "RedPajamaC4"}},
    {"text": "gamma", "meta": {"redpajama_set_name": "RedPajamaGithub"}},
    {"text": "delta", "meta": {"redpajama_set_name": "RedPajamaBook"}},
    {"text": "epsilon", "meta": {"redpajama_set_name": "RedPajamaBook"}},
]
EXPECTED = ["alpha", "", None, "delta", "epsilon"]  # None: excluded
FILTER = Filter("text", {"meta.redpajama_set_name": ["RedPajamaGithub"]})


def _lines(records):
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _write(path, kind, records=RECORDS):
    if kind == "jsonl":
        path.write_bytes(_lines(records))
    elif kind == "jsonl.zst":  # two frames, as concatenated .zst files are
        half = len(records) // 2
        c = zstandard.ZstdCompressor()
        path.write_bytes(c.compress(_lines(records[:half])) + c.compress(_lines(records[half:])))
    elif kind == "json.gz":
        path.write_bytes(gzip.compress(_lines(records)))
    elif kind == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=2)


def _read(tmp_path, name):
    opener = Opener(str(tmp_path), None)
    return [text for _, _, text in iter_file(opener, file_info(opener, name), FILTER)]


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.zst", "json.gz", "parquet"])
def test_every_format_reads_the_same_documents(tmp_path, kind):
    name = f"data.{kind}"
    _write(tmp_path / name, kind)
    assert _read(tmp_path, name) == EXPECTED


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.zst", "parquet"])
def test_parts_split_a_file_without_overlap(tmp_path, kind):
    records = [{"text": f"doc{i}"} for i in range(23)]
    name = f"data.{kind}"
    _write(tmp_path / name, kind, records)
    opener = Opener(str(tmp_path), None)
    info = file_info(opener, name)
    seen = []
    for seg in range(info.segments):
        for j in range(3):
            docs = list(iter_part(opener, info, Part(0, seg, j, 3), 0, Filter("text", {})))
            assert [t for t, _ in docs] == list(range(len(docs)))
            seen += [text for _, text in docs]
            # resuming at document 2 of the part gives the rest of the part
            assert list(iter_part(opener, info, Part(0, seg, j, 3), 2, Filter("text", {}))) == docs[2:]
    assert sorted(seen) == sorted(r["text"] for r in records)


def test_truncated_files_raise_read_errors_naming_the_file(tmp_path):
    blob = zstandard.ZstdCompressor().compress(_lines(RECORDS * 50))
    (tmp_path / "cut.jsonl.zst").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "cut.json.gz").write_bytes(gzip.compress(_lines(RECORDS * 50))[:200])
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    for name in ("cut.jsonl.zst", "cut.json.gz", "bad.parquet"):
        with pytest.raises(ReadError, match=name):
            _read(tmp_path, name)


def test_a_malformed_line_is_a_skipped_document(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(b'{"text": "a"}\n{"text": "b"\n{"text": "c"}\n')
    assert _read(tmp_path, "x.jsonl") == ["a", "", "c"]

"""Start checks that read data: a wrong text_field or a source of unreadable files is one line."""

from __future__ import annotations

import pytest

from tests.data.fixtures import job_config, make_corpus, sources
from tests.helpers import DEBUG_CONFIG, launch, refused_before_start, tree_digest
from tinytitan.data.preflight import check_data
from tinytitan.errors import TinytitanError


def test_the_fixture_corpus_passes(corpus):
    files = check_data(job_config(corpus))
    assert sorted(files) == sorted(s["name"] for s in sources(corpus))
    assert all(files.values()), files  # every source lists its files


@pytest.mark.parametrize("source,field,shown", [(0, "body", "meta"), (1, "text", "content")])
def test_a_text_field_missing_from_the_records_names_the_fields_it_has(corpus, source, field, shown):
    srcs = sources(corpus)
    srcs[source]["text_field"] = field
    with pytest.raises(TinytitanError, match=f"no field '{field}' \\(fields: .*{shown}") as e:
        check_data(job_config(corpus, source_list=srcs))
    assert "set text_field" in str(e.value)


def test_a_nested_text_field_is_found(corpus):
    srcs = sources(corpus)[:1]
    srcs[0]["text_field"] = "meta.redpajama_set_name"  # a string inside a dict: a valid dotted path
    assert check_data(job_config(corpus, source_list=srcs))[srcs[0]["name"]]


def test_a_source_none_of_whose_files_opens_is_refused(tmp_path):
    corpus = make_corpus(tmp_path)  # changed below: not the shared session corpus
    for path in corpus.starcoderdata.rglob("*.parquet"):
        path.write_bytes(b"not a parquet file")
    with pytest.raises(TinytitanError, match=r"starcoderdata.*all 3 of its files cannot be read \(first: python/"):
        check_data(job_config(corpus))


def test_an_unreadable_first_file_is_skipped(tmp_path):
    corpus = make_corpus(tmp_path)  # changed below: not the shared session corpus
    first = sorted(corpus.starcoderdata.rglob("*.parquet"))[0]
    first.write_bytes(b"garbage")
    files = check_data(job_config(corpus))  # the next file opens: the readers skip the bad one
    assert str(first.relative_to(corpus.starcoderdata)) in files["starcoderdata"]  # listed, skipped when read


def test_the_launcher_refuses_a_wrong_text_field_in_one_line(tmp_path):
    dump = tmp_path / "run"
    before = tree_digest(DEBUG_CONFIG.parent.parent / "tinytitan/assets/sample")
    proc = launch(["--job.dump_folder", str(dump), "--data.sources.1.text_field", "code"], check=False, timeout=120)
    line = refused_before_start(proc, dump)
    assert "no field 'code'" in line and "content" in line
    assert tree_digest(DEBUG_CONFIG.parent.parent / "tinytitan/assets/sample") == before

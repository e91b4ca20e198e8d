"""The launcher's data checks: one line naming the source, the counts and the fix, before any process starts."""

from __future__ import annotations

import json

import pytest

from tests.helpers import launch, refused_before_start
from tinytitan.config import load_job_config
from tinytitan.data.preflight import check_data
from tinytitan.errors import TinytitanError


def test_validation_docs_holding_out_the_whole_first_file_is_one_line():
    proc = launch(["--data.sources.1.validation_docs", "2000"], check=False, timeout=300)
    line = refused_before_start(proc)
    assert "data source 'starcoderdata'" in line
    assert "validation_docs = 2000 holds out every document of its first file" in line
    assert "which has 124: set validation_docs below 124" in line


def test_lanes_fewer_than_readers_is_one_line():
    proc = launch(["--data.lanes", "1"], check=False, timeout=300)
    line = refused_before_start(proc)
    assert "data.lanes = 1 but the run has 2 data readers" in line and "set data.lanes >= 2" in line


def test_a_source_with_fewer_documents_than_readers_is_refused(tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "a.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(9)) + "\n")
    job_config = load_job_config(
        None,
        ["--data.sources.1.path", str(tmp_path / "tiny"), "--data.sources.1.files", "*.jsonl",
         "--data.sources.1.text_field", "text", "--data.sources.1.validation_docs", "1"],
    )  # fmt: skip
    check_data(job_config, world_size=8)  # 8 training documents for 8 readers: one each
    job_config.training.dataloader.num_workers = 2  # 16 readers
    with pytest.raises(TinytitanError, match=r"'starcoderdata' .* has 8 training documents but 16 data readers"):
        check_data(job_config, world_size=8)

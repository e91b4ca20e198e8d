"""The [data] schema: TOML parsing through torchtitan's ConfigManager, CLI overrides, bad input."""

from __future__ import annotations

import textwrap

import pytest
from torchtitan.config import ConfigManager

from tests.data.fixtures import job_config, sources
from tinytitan.data.config import Data, Source
from tinytitan.data.preflight import check_data
from tinytitan.errors import TinytitanError


def write_toml(tmp_path, corpus, extra_source="", extra_data=""):
    text = textwrap.dedent(
        f"""
        [job]
        custom_config_module = "tinytitan.job_config"

        [data]
        seed = 1234
        format = "text"
        {extra_data}

        [[data.sources]]
        name = "slimpajama"
        path = "{corpus.slimpajama}"
        files = "train/chunk*/*.jsonl.zst"
        text_field = "text"
        weight = 0.693584
        exclude = {{ "meta.redpajama_set_name" = ["RedPajamaGithub"] }}
        validation_files = "validation/chunk*/*.jsonl.zst"
        {extra_source}

        [[data.sources]]
        name = "starcoderdata"
        path = "{corpus.starcoderdata}"
        files = "*/train-*.parquet"
        text_field = "content"
        weight = 0.306416
        validation_docs = 10
        """
    )
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def parse(path, *overrides):
    return ConfigManager().parse_args(["--job.config_file", str(path), *overrides])


def test_toml_sources_parse_and_cli_overrides_work(tmp_path, corpus):
    cfg = parse(write_toml(tmp_path, corpus))
    data = cfg.data
    assert isinstance(data, Data) and data.seed == 1234 and data.format == "text"
    assert [s.name for s in data.sources] == ["slimpajama", "starcoderdata"]
    assert all(isinstance(s, Source) for s in data.sources)
    sp, sc = data.sources
    assert sp.exclude == {"meta.redpajama_set_name": ["RedPajamaGithub"]}
    assert sc.text_field == "content" and sc.validation_docs == 10
    check_data(cfg)

    cfg = parse(write_toml(tmp_path, corpus), "--data.seed", "7", "--data.sources.1.weight", "0.5")
    assert cfg.data.seed == 7
    assert cfg.data.sources[1].weight == 0.5 and cfg.data.sources[0].weight == 0.693584


def test_unknown_source_key_is_named(tmp_path, corpus):
    path = write_toml(tmp_path, corpus, extra_source='colour = "blue"')
    with pytest.raises(TinytitanError, match=r"'slimpajama'.*unknown key\(s\) colour.*valid keys"):
        parse(path)


def test_unknown_data_key_is_rejected(tmp_path, corpus):
    path = write_toml(tmp_path, corpus, extra_data="shuffle = true")
    with pytest.raises(ValueError, match="shuffle"):
        parse(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"weight": 0}, r"'slimpajama'.*weight = 0 is not a positive number"),
        ({"weight": -1.5}, r"'slimpajama'.*weight = -1.5 is not a positive number"),
        (
            {"path": "/nonexistent/SlimPajama-627B"},
            r"'slimpajama' \(path '/nonexistent/SlimPajama-627B'\).*does not exist.*expected",
        ),
        ({"files": "train/chunk*/*.txt"}, r"'slimpajama'.*matches no .*expected"),
        ({"validation_files": "holdout/*.jsonl.zst"}, r"'slimpajama'.*validation_files .* matches no file"),
        ({"files": ""}, r"'slimpajama'.*no files glob"),
        ({"name": ""}, r"needs a name"),
    ],
)
def test_bad_sources_fail_with_one_clear_error(corpus, change, message):
    srcs = sources(corpus)
    srcs[0].update(change)
    with pytest.raises(TinytitanError, match=message):
        check_data(job_config(corpus, source_list=srcs))


def test_bad_data_settings(corpus):
    with pytest.raises(TinytitanError, match="data.format"):
        check_data(job_config(corpus, data_overrides={"format": "bytes"}))
    with pytest.raises(TinytitanError, match="on_error"):
        check_data(job_config(corpus, data_overrides={"on_error": "ignore"}))
    srcs = sources(corpus)
    srcs[1]["name"] = "slimpajama"
    with pytest.raises(TinytitanError, match="used twice"):
        check_data(job_config(corpus, source_list=srcs))
    with pytest.raises(TinytitanError, match="no sources"):
        check_data(job_config(corpus, source_list=[]))


def test_too_many_readers_for_lanes(corpus):
    from tests.data.fixtures import loader

    with pytest.raises(TinytitanError, match="data.lanes"):
        loader(corpus, rank=0, world=4, workers=0, data_overrides={"lanes": 2})


def test_a_source_declares_its_hub_dataset_only_explicitly():
    local = Source(name="slimpajama", path="data/SlimPajama-627B", files="*.jsonl")
    assert local.declared_hub_id() == ""  # a folder named like a Hub dataset is not one
    assert Source(name="s", path="hf://datasets/cerebras/SlimPajama-627B/train", files="*").declared_hub_id() == (
        "cerebras/SlimPajama-627B"
    )
    declared = Source(name="s", path="data/x", files="*", hub_id="bigcode/starcoderdata")
    declared.validate()
    assert declared.declared_hub_id() == "bigcode/starcoderdata"
    with pytest.raises(TinytitanError, match="hub_id = 'starcoderdata' is not a Hub dataset id"):
        Source(name="s", path="data/x", files="*", hub_id="starcoderdata").validate()

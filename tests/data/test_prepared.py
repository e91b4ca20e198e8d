"""Prepared token shards: prepare -> train equivalence, reruns, tokenizer check, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import textwrap

import numpy as np
import pytest
import torch

from tests.data.fixtures import Corpus, job_config, loader, make_corpus, tokenizer, write_tokenizer
from tinytitan.data import cli
from tinytitan.data.preflight import check_data
from tinytitan.data.prepare import prepare
from tinytitan.data.shards import load_manifest, plan_from_prepared
from tinytitan.errors import TinytitanError


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepare(job_config(corpus).data, tokenizer(corpus), str(out), workers=2, progress=False)
    return str(out)


def tokens_format(prepared):
    return {"format": "tokens", "prepared_dir": prepared}


def _windows(dl, n):
    it = iter(dl)
    out = []
    for _ in range(n):
        inputs, labels = next(it)
        out.append(torch.cat([inputs["input"], labels[:, -1:]], dim=1))
    return out


def test_manifest_counts_and_dtype(corpus: Corpus, prepared):
    m = load_manifest(prepared)
    assert m.dtype == "uint32" and m.version == 2
    sp = m.sources["slimpajama"]
    kept = corpus.kept("slimpajama")
    assert sp.docs == len(kept)
    assert sp.tokens == sum(corpus.docs[i].words + 2 for i in kept)
    assert sum(r.empty for r in sp.files) == 1 and sp.files_with_errors == [corpus.corrupt_file]
    assert len(sp.validation_files) == 1
    # SlimPajama's validation/chunk1/... held-out file: under <source>/validation/, not validation/validation/
    assert os.path.isfile(
        os.path.join(prepared, "slimpajama", "validation", "chunk1", "example_holdout_0.jsonl.zst.tok")
    )
    assert not os.path.exists(os.path.join(prepared, "slimpajama", "validation", "validation"))
    sc = m.sources["starcoderdata"]
    assert sc.docs == len(corpus.kept("starcoderdata")) == 100
    rel = sc.files[0].rel
    shard = np.memmap(os.path.join(prepared, "starcoderdata", rel + ".tok"), dtype=np.uint32, mode="r")
    assert shard[0] == 0 and shard.size == sc.files[0].tokens  # BOS first
    on_disk = json.loads(open(os.path.join(prepared, "manifest.json")).read())
    assert on_disk["sources"]["slimpajama"]["tokens"] == sp.tokens  # the totals stay readable for people


@pytest.mark.parametrize("world", [1, 2])
def test_text_and_tokens_formats_give_the_same_stream(corpus, prepared, world):
    for rank in range(world):
        text = _windows(loader(corpus, rank=rank, world=world, batch=4, seq_len=64), 120)
        toks = _windows(
            loader(corpus, rank=rank, world=world, batch=4, seq_len=64, data_overrides=tokens_format(prepared)), 120
        )
        for a, b in zip(text, toks, strict=True):
            assert torch.equal(a, b)


def test_a_text_run_resumes_on_tokens_exactly(corpus, prepared):
    kw = dict(batch=4, seq_len=64)
    ref = _windows(loader(corpus, **kw), 40)
    first = loader(corpus, **kw)
    _windows(first, 20)
    dl = loader(corpus, data_overrides=tokens_format(prepared), **kw)
    dl.load_state_dict(first.state_dict())
    for a, b in zip(ref[20:], _windows(dl, 20), strict=True):
        assert torch.equal(a, b)


def test_prepare_rerun_redoes_only_unfinished_files(corpus, tmp_path, caplog):
    out = str(tmp_path / "p")
    data = job_config(corpus).data
    prepare(data, tokenizer(corpus), out, workers=1, progress=False)
    victim = os.path.join(out, "starcoderdata", "rust", "train-00000-of-00001.parquet")
    kept = os.path.join(out, "starcoderdata", "python", "train-00000-of-00002.parquet.tok")
    mtime = os.path.getmtime(kept)
    os.remove(victim + ".done.json")  # as if interrupted while this file was written
    os.remove(victim + ".tok")
    with caplog.at_level("INFO", logger="tinytitan.data"):
        prepare(data, tokenizer(corpus), out, workers=1, progress=False)
    assert "1 to tokenize" in caplog.text
    assert os.path.exists(victim + ".tok") and os.path.getmtime(kept) == mtime


def test_shards_of_another_tokenizer_are_refused(corpus, prepared, tmp_path):
    other = tmp_path / "other-tokenizer"
    write_tokenizer(other, max_id=len(corpus.docs) + 5)  # another vocabulary
    from tinytitan.tokenizer import load_tokenizer

    data = job_config(corpus, data_overrides=tokens_format(prepared)).data
    with pytest.raises(TinytitanError, match="another tokenizer"):
        plan_from_prepared(data, load_tokenizer(other))
    jc = job_config(corpus, data_overrides=tokens_format(prepared))
    jc.model.hf_assets_path = str(other)
    with pytest.raises(TinytitanError, match="another tokenizer.*rerun `tinytitan data prepare"):
        check_data(jc)
    jc.model.hf_assets_path = str(corpus.tokenizer)
    check_data(jc)


def test_missing_or_stale_shards_are_refused(corpus, prepared, tmp_path):
    with pytest.raises(TinytitanError, match="run `tinytitan data prepare"):
        check_data(job_config(corpus, data_overrides=tokens_format(str(tmp_path / "none"))))
    srcs = job_config(corpus).data.sources
    srcs[0].exclude = {}
    jc = job_config(corpus, data_overrides=tokens_format(prepared))
    jc.data.sources[0].exclude = {}
    with pytest.raises(TinytitanError, match="'slimpajama'.*differ from the prepared shards"):
        check_data(jc)


def test_a_truncated_shard_is_refused_at_start_and_redone_by_prepare(corpus, prepared, tmp_path, caplog):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(prepared, copy)
    victim = os.path.join(copy, "starcoderdata", "python", "train-00000-of-00002.parquet.tok")
    whole = os.path.getsize(victim)
    os.truncate(victim, whole // 2)
    jc = job_config(corpus, data_overrides=tokens_format(copy))
    with pytest.raises(TinytitanError, match=rf"{whole // 2:,} bytes but .* need {whole:,} .*rerun `tinytitan data"):
        check_data(jc)
    with caplog.at_level("INFO", logger="tinytitan.data"):
        prepare(jc.data, tokenizer(corpus), copy, workers=1, progress=False)
    assert "1 to tokenize" in caplog.text and os.path.getsize(victim) == whole
    check_data(jc)


def _toml(corpus, tmp_path, fmt="text", prepared_dir=""):
    path = tmp_path / "job.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [job]
            custom_config_module = "tinytitan.job_config"
            [model]
            hf_assets_path = "{corpus.tokenizer}"
            [training]
            local_batch_size = 4
            seq_len = 64
            [data]
            format = "{fmt}"
            lanes = 8
            prepared_dir = "{prepared_dir or tmp_path / "prepared"}"
            [[data.sources]]
            name = "slimpajama"
            path = "{corpus.slimpajama}"
            files = "train/chunk*/*.jsonl.zst"
            weight = 0.7
            exclude = {{ "meta.redpajama_set_name" = ["RedPajamaGithub"] }}
            [[data.sources]]
            name = "starcoderdata"
            path = "{corpus.starcoderdata}"
            files = "*/train-*.parquet"
            text_field = "content"
            weight = 0.3
            """
        )
    )
    return str(path)


def _cli(argv):
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return cli.run(parser.parse_args(argv))


def test_cli_prepare_and_bench(corpus, tmp_path, capsys):
    config = _toml(corpus, tmp_path)
    assert _cli(["prepare", "--config", config, "--out", str(tmp_path / "prepared"), "--no-progress"]) == 0
    assert "manifest.json" in capsys.readouterr().out
    assert _cli(["bench", "--config", config, "--tokens", "50000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens_per_s"] > 0
    assert set(result["tokens_per_source"]) == {"slimpajama", "starcoderdata"}
    assert sum(result["tokens_per_source"].values()) >= 50000
    assert any(corpus.corrupt_file in f for f in result["files_skipped"])
    assert _cli(["bench", "--config", config, "--tokens", "50000", "--", "--data.format", "tokens"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "slimpajama" in out


def test_cli_help_and_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    for action in ("prepare", "bench"):
        with pytest.raises(SystemExit):
            parser.parse_args([action, "--help"])
        assert "--config" in capsys.readouterr().out
    with pytest.raises(TinytitanError, match="does not exist"):
        _cli(["bench", "--config", str(tmp_path / "missing.toml")])
    with pytest.raises(TinytitanError, match="--tokens -5 .* must be at least 1"):
        _cli(["bench", "--config", str(tmp_path / "missing.toml"), "--tokens", "-5"])
    with pytest.raises(TinytitanError, match=r"--dp-rank 2 must be in \[0, --dp-world-size 2\)"):
        _cli(["bench", "--config", str(tmp_path / "missing.toml"), "--dp-world-size", "2", "--dp-rank", "2"])


def test_sample_tokenizer_corpus_roundtrip(tmp_path):
    """A fresh corpus with another seed: formats agree on it too (guards against fixture luck)."""
    c = make_corpus(tmp_path / "c", seed=3)
    out = str(tmp_path / "p")
    prepare(job_config(c).data, tokenizer(c), out, workers=1, progress=False)
    a = _windows(loader(c, batch=2, seq_len=100), 60)
    b = _windows(loader(c, batch=2, seq_len=100, data_overrides=tokens_format(out)), 60)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_version_1_manifest_is_still_read(corpus, prepared, tmp_path):
    """Folders prepared before the typed manifest (version 1: no piece_chars) train as before."""
    import shutil

    copy = tmp_path / "v1"
    shutil.copytree(prepared, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    del doc["piece_chars"]
    doc["version"] = 1
    (copy / "manifest.json").write_text(json.dumps(doc, indent=1))
    m = load_manifest(str(copy))
    assert m.piece_chars is None and m.sources == load_manifest(prepared).sources
    v1 = _windows(loader(corpus, batch=4, seq_len=64, data_overrides=tokens_format(str(copy))), 30)
    v2 = _windows(loader(corpus, batch=4, seq_len=64, data_overrides=tokens_format(prepared)), 30)
    assert all(torch.equal(a, b) for a, b in zip(v1, v2, strict=True))
    doc["version"] = 3
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(TinytitanError, match=r"has format version 3, not one this tinytitan reads \(1, 2\)"):
        load_manifest(str(copy))
    (copy / "manifest.json").write_text('{"version": 2, "tokenizer": "x"}')
    with pytest.raises(TinytitanError, match=r"manifest.json is damaged \(KeyError: 'bos_id'\); rerun"):
        load_manifest(str(copy))

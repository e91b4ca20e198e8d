"""The one tokenizer loader and ``download-tokenizer``'s all-or-nothing download, through its client."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tinytitan.cli import main
from tinytitan.errors import TinytitanError
from tinytitan.tokenizer import EMBEDDED_TOKENIZER, download_tokenizer, load_tokenizer


class ServerError(OSError):
    """What the Hub client raises for an HTTP status: an OSError carrying the response."""

    def __init__(self, status: int):
        super().__init__(f"{status} error")
        self.response = SimpleNamespace(status_code=status)


def serving(fail_on: str | None = None, error: BaseException | None = None):
    """A client with hf_hub_download's keywords that serves the embedded tokenizer's files."""

    def download(*, repo_id, filename, local_dir, token):
        if filename == fail_on:
            raise error
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        source = EMBEDDED_TOKENIZER / Path(filename).name
        target.write_bytes(source.read_bytes() if source.is_file() else b"tiktoken ranks")
        return str(target)

    return download


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_loader_gives_bos_eos_and_vocab():
    tok = load_tokenizer(EMBEDDED_TOKENIZER)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (
        tok.tokenizer.token_to_id("<|begin_of_text|>"),
        tok.tokenizer.token_to_id("<|end_of_text|>"),
        4096,
    )
    assert tok.decode(tok.encode("def f(x): return x")) == "def f(x): return x"


def test_corrupt_tokenizer_json_is_one_line_naming_it(tmp_path):
    shutil.copytree(EMBEDDED_TOKENIZER, tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").write_text('{"version": ')
    with pytest.raises(TinytitanError, match=r"tok/tokenizer.json is not a valid tokenizer .*download-tokenizer"):
        load_tokenizer(tmp_path / "tok")


def test_download_writes_all_files_at_once(tmp_path):
    written = download_tokenizer("org/model", tmp_path / "tok", client=serving())
    assert [p.relative_to(tmp_path / "tok").as_posix() for p in written] == [
        "tokenizer.json", "tokenizer_config.json", "original/tokenizer.model"]  # fmt: skip
    assert load_tokenizer(tmp_path / "tok").vocab_size == 4096
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temp folder left


@pytest.mark.parametrize(
    "error, message",
    [
        (ServerError(500), "the Hub answered HTTP 500 for org/model/tokenizer_config.json: retry later"),
        (ServerError(404), "HTTP 404 for org/model/tokenizer_config.json: check the repo id"),
        (ConnectionError("refused"), "cannot reach the Hugging Face Hub to fetch org/model/tokenizer_config.json"),
    ],
)
def test_a_failed_second_file_leaves_nothing_behind(tmp_path, capsys, monkeypatch, error, message):
    """A server error after tokenizer.json once left a folder holding only that file."""
    from tinytitan import tokenizer

    real = tokenizer.download_tokenizer
    monkeypatch.setattr(tokenizer, "download_tokenizer", lambda *a, **k: real(*a, **k, client=serving(
        "tokenizer_config.json", error)))  # fmt: skip
    assert main(["download-tokenizer", "--repo-id", "org/model", "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_kept_without_force(tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "tokenizer.json").write_text("mine")
    with pytest.raises(TinytitanError, match="is not empty: pass --force"):
        download_tokenizer("org/model", out, client=serving())
    assert _snapshot(out) == {Path("tokenizer.json"): b"mine"}
    download_tokenizer("org/model", out, client=serving(), force=True)
    assert load_tokenizer(out).vocab_size == 4096


def test_a_download_without_bos_eos_is_refused_and_not_installed(tmp_path):
    def no_config(**kw):
        if kw["filename"] == "tokenizer_config.json":
            target = Path(kw["local_dir"]) / "tokenizer_config.json"
            target.write_text('{"bos_token": "<nope>", "eos_token": "<nope>"}')
            return str(target)
        return serving()(**kw)

    with pytest.raises(TinytitanError, match="has no BOS/EOS token"):
        download_tokenizer("org/model", tmp_path / "tok", client=no_config)
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_repo_id_is_refused_before_any_request(tmp_path, capsys):
    assert main(["download-tokenizer", "--repo-id", "bad repo", "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert "--repo-id 'bad repo' is not a Hub repo id" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_repo_or_folder_with_only_the_tiktoken_file_is_converted(tmp_path, llama3_model, capsys):
    """The seed's `--tokenizer_path original` layout, from the Hub and from a local copy."""

    def only_original(*, repo_id, filename, local_dir, token):
        if filename != "original/tokenizer.model":
            raise ServerError(404)
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(llama3_model, target)
        return str(target)

    download_tokenizer("org/model", tmp_path / "hub", client=only_original)
    assert load_tokenizer(tmp_path / "hub").vocab_size == 128256
    local = tmp_path / "seed" / "original"
    local.mkdir(parents=True)
    shutil.copyfile(llama3_model, local / "tokenizer.model")
    assert main(["download-tokenizer", "--repo-id", str(local.parent), "--out", str(tmp_path / "local")]) == 0
    assert (tmp_path / "local" / "tokenizer.json").read_bytes() == (tmp_path / "hub" / "tokenizer.json").read_bytes()
    assert "has no tokenizer.json: converting original/tokenizer.model" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "local", "seed"]


def test_a_local_folder_missing_a_file_is_named(tmp_path, capsys):
    (tmp_path / "copy").mkdir()
    shutil.copyfile(EMBEDDED_TOKENIZER / "tokenizer.json", tmp_path / "copy" / "tokenizer.json")
    assert main(["download-tokenizer", "--repo-id", str(tmp_path / "copy"), "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert f"folder {tmp_path / 'copy'} has no tokenizer_config.json" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_the_reachability_check_refuses_a_refused_endpoint_but_not_behind_a_proxy(monkeypatch):
    """No proxy: a refused connection is one line at once. Behind an HTTPS proxy a direct connection says nothing
    about the Hub (huggingface_hub goes through the proxy), so the check stands aside."""
    from tinytitan.errors import TinytitanError
    from tinytitan.tokenizer import check_hub_reachable

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                 "no_proxy", "HF_HUB_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    with pytest.raises(TinytitanError, match=r"cannot reach the Hugging Face Hub \(127\.0\.0\.1:9: "):
        check_hub_reachable("meta-llama/Meta-Llama-3-8B", timeout_s=2)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    check_hub_reachable("meta-llama/Meta-Llama-3-8B", timeout_s=2)  # no raise: the proxy decides

"""`tinytitan push` up to the network boundary: an autospec of HfApi stands in for the client.

Checks that repos are private unless --public, the collection is added, the folder is verified
first, the token never appears in any output, and each failure is one line with its fix."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import create_autospec

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from tinytitan.cli import main
from tinytitan.errors import TinytitanError
from tinytitan.export import push as hub

TOKEN = "hf_SECRETsecretSECRETsecret0123456789"


def http_error(status: int, cls=HfHubHTTPError):
    return cls(f"{status} error", response=SimpleNamespace(status_code=status, headers={}, request=None))


class FakeHub:
    """An autospec of ``HfApi``: a call whose signature the installed huggingface_hub does not accept fails.

    ``existing`` is None (no repo) or the repo's privacy; ``fail`` maps a method name to the error it raises.
    """

    endpoint = "https://huggingface.co"

    def __init__(self, existing: bool | None = None, fail: dict | None = None):
        self.api = create_autospec(HfApi, instance=True)
        self.api.endpoint = self.endpoint
        fail = fail or {}

        def repo_info(repo_id, *args, **kwargs):
            if "repo_info" in fail:
                raise fail["repo_info"]
            if existing is None:
                raise http_error(404, RepositoryNotFoundError)
            return SimpleNamespace(id=repo_id, private=existing)

        self.api.repo_info.side_effect = repo_info
        for name, error in fail.items():
            if name != "repo_info":
                getattr(self.api, name).side_effect = error

    def __getattr__(self, name):
        return getattr(self.api, name)

    @property
    def calls(self) -> list:
        """(name, args, kwargs) of every call, in order."""
        return list(self.api.method_calls)

    def names(self) -> list[str]:
        return [c[0] for c in self.api.method_calls]


class NoNetwork:
    def __getattr__(self, name):
        raise AssertionError(f"the Hub client was used ({name}) where it must not be")


@pytest.fixture
def folder(debug_export) -> Path:
    return debug_export


def _push(folder, client, **kw):
    kw.setdefault("token", TOKEN)
    kw.setdefault("verify", False)  # verification has its own tests below; the call flow is what is tested here
    return hub.push(folder, "my-org/tiny-debug", client=client, **kw)


def test_new_repo_is_private_and_joins_the_collection(folder, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    client = FakeHub()
    url = _push(folder, client, collection="my-org/tiny-llamas-65f1e2", verify=True)
    assert url == "https://huggingface.co/my-org/tiny-debug"
    assert client.names() == ["repo_info", "create_repo", "upload_folder", "add_collection_item"]
    assert client.calls[1][2]["private"] is True
    upload = client.calls[2][2]
    assert upload["repo_id"] == "my-org/tiny-debug" and Path(upload["folder_path"]) == folder
    assert client.calls[3][1] == ("my-org/tiny-debug",) or client.calls[3][2]["item_id"] == "my-org/tiny-debug"
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err + caplog.text
    assert "verified" in out.out


def test_public_only_when_asked(folder):
    client = FakeHub()
    _push(folder, client, public=True)
    assert client.calls[1][2]["private"] is False


def test_existing_private_repo_stays_private(folder):
    client = FakeHub(existing=True)
    _push(folder, client)
    assert client.names() == ["repo_info", "upload_folder"]


def test_existing_private_repo_made_public_only_with_public(folder):
    client = FakeHub(existing=True)
    _push(folder, client, public=True)
    assert client.names() == ["repo_info", "update_repo_settings", "upload_folder"]
    assert client.calls[1][2]["private"] is False


def test_existing_public_repo_needs_public(folder):
    client = FakeHub(existing=False)
    with pytest.raises(TinytitanError, match="exists and is public: pass --public"):
        _push(folder, client)
    assert client.names() == ["repo_info"]


def test_revision_creates_the_branch(folder):
    client = FakeHub(existing=True)
    url = _push(folder, client, revision="step-20", commit_message="step 20")
    assert client.names() == ["repo_info", "create_branch", "upload_folder"]
    assert client.calls[2][2]["revision"] == "step-20" and client.calls[2][2]["commit_message"] == "step 20"
    assert url.endswith("/my-org/tiny-debug/tree/step-20")


def test_dry_run_touches_no_network(folder, capsys, monkeypatch):
    monkeypatch.setattr(hub, "default_client", lambda token: NoNetwork())
    rc = main(["push", str(folder), "--repo-id", "my-org/tiny-debug", "--collection", "my-org/c-1", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "my-org/tiny-debug (private)" in out and "my-org/c-1" in out
    assert "model.safetensors" in out and "MiB" in out and "README.md" in out


@pytest.mark.parametrize(
    "repo_id", ["tiny-debug", "a/b/c", "my org/x", "org/-x", "org/x--y", "org/x..y", "", "org/" + "x" * 97]
)
def test_malformed_repo_id(folder, repo_id):
    with pytest.raises(TinytitanError, match="is malformed"):
        hub.push(folder, repo_id, client=NoNetwork(), token=TOKEN)


def test_no_token(folder, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(TinytitanError, match="no Hugging Face token: set HF_TOKEN or run `hf auth login`"):
        hub.push(folder, "my-org/tiny-debug", client=NoNetwork())


@pytest.mark.parametrize(
    "fail, message",
    [
        ({"repo_info": http_error(401)}, "token was rejected (401)"),
        ({"create_repo": http_error(403)}, "no permission to create my-org/tiny-debug (403)"),
        ({"upload_folder": http_error(403)}, "no permission to upload to my-org/tiny-debug"),
        ({"add_collection_item": http_error(404)}, "add to collection my-org/c-1 my-org/tiny-debug: not found (404)"),
        ({"repo_info": ConnectionError("boom")}, "cannot reach the Hugging Face Hub"),
        ({"upload_folder": type("ConnectError", (Exception,), {})("dns")}, "cannot reach the Hugging Face Hub"),
    ],
)
def test_hub_errors_are_one_line(folder, fail, message):
    with pytest.raises(TinytitanError) as e:
        _push(folder, FakeHub(fail=fail), collection="my-org/c-1")
    assert message in str(e.value) and "\n" not in str(e.value) and TOKEN not in str(e.value)


def test_refuses_an_invalid_export(folder, tmp_path, capsys):
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    del config["rope_parameters"], config["rope_scaling"]
    (broken / "config.json").write_text(json.dumps(config))
    rc = main(["push", str(broken), "--repo-id", "my-org/x", "--dry-run"])
    assert rc == 2 and "RoPE" in capsys.readouterr().err
    (folder / "README.md").rename(tmp_path / "README.md")
    try:
        with pytest.raises(TinytitanError, match="has no README.md"):
            hub.push(folder, "my-org/x", client=NoNetwork(), token=TOKEN)
    finally:
        (tmp_path / "README.md").rename(folder / "README.md")


def test_the_stand_in_rejects_a_call_hfapi_would_reject():
    """Why an autospec: a renamed keyword in huggingface_hub fails here, not only on the real Hub."""
    with pytest.raises(TypeError):
        FakeHub().create_repo("my-org/x", privat=True)
    with pytest.raises(TypeError):
        FakeHub().upload_folder(repo_id="my-org/x", folder_pth="x")

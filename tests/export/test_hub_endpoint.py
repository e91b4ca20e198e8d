"""download-tokenizer and push against a local stand-in for the Hub (HF_ENDPOINT on 127.0.0.1).

The real huggingface_hub client makes real HTTP requests; each failure must end in one line
naming the cause, exit code 2, nothing written or changed, and the token never shown."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.export.test_hub import TOKEN
from tests.helpers import REPO, one_line_error, tree_digest
from tests.hub_server import HubServer

TOKENIZER = REPO / "tinytitan" / "assets" / "tokenizer"
REPO_ID = "org/llama"


def hub_files() -> dict[str, bytes]:
    files = {f"{REPO_ID}/{n}": (TOKENIZER / n).read_bytes() for n in ("tokenizer.json", "tokenizer_config.json")}
    files[f"{REPO_ID}/original/tokenizer.model"] = b"tiktoken ranks would be here\n"
    return files


def tinytitan(hub: HubServer | None, *args: str, token: str = TOKEN, endpoint: str | None = None, sleeps=None):
    """The CLI in a subprocess against `hub`; with `sleeps` (a file), huggingface_hub's retry waits are
    written there instead of slept, so its five retries of a refused connection take no time."""
    env = {**os.environ, "HF_ENDPOINT": endpoint or hub.url, "HF_TOKEN": token, "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    command = [sys.executable, "-m", "tinytitan.cli", *args]
    if sleeps is not None:
        command = [sys.executable, "-c", NO_BACKOFF, str(sleeps), *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert token not in proc.stdout + proc.stderr  # the token is never shown
    return proc


NO_BACKOFF = (
    "import sys, time; from pathlib import Path; "
    "time.sleep = lambda s: Path(sys.argv[1]).open('a').write(f'{s}\\n'); "
    "from tinytitan.cli import main; sys.exit(main(sys.argv[2:]))"
)


def test_download_writes_the_folder_and_sends_the_token(tmp_path):
    out = tmp_path / "tok"
    with HubServer(hub_files()) as hub:
        proc = tinytitan(hub, "download-tokenizer", "--repo-id", REPO_ID, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "tokenizer.json").read_bytes() == (TOKENIZER / "tokenizer.json").read_bytes()
    sent = [h.get("authorization") or h.get("Authorization") for m, p, h in hub.requests if "/resolve/" in p]
    assert sent and all(a == f"Bearer {TOKEN}" for a in sent)


@pytest.mark.parametrize(
    "statuses,message",
    [
        ({"GET tokenizer_config.json": 500}, "HTTP 500 for org/llama/tokenizer_config.json: retry later"),
        ({"tokenizer.json": 401}, "HTTP 401 for org/llama/tokenizer.json: the token was rejected"),
        ({"tokenizer.json": 403}, "HTTP 403 .*this token has no access"),
    ],
)
def test_download_errors_are_one_line_and_leave_nothing(tmp_path, statuses, message):
    import re

    out = tmp_path / "tok"
    with HubServer(hub_files(), statuses) as hub:
        proc = tinytitan(hub, "download-tokenizer", "--repo-id", REPO_ID, "--out", str(out))
    assert re.search(message, one_line_error(proc))
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half folder, no temp folder


def test_an_existing_tokenizer_folder_survives_a_failed_forced_download(tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "tokenizer.json").write_text("{}")
    before = tree_digest(out)
    with HubServer(hub_files(), {"GET tokenizer_config.json": 500}) as hub:
        proc = tinytitan(hub, "download-tokenizer", "--repo-id", REPO_ID, "--out", str(out), "--force")
    assert "HTTP 500" in one_line_error(proc)
    assert tree_digest(out) == before


def test_an_unreachable_hub_ends_in_one_error_line(tmp_path):
    """A refused connection: tinytitan's own reachability check answers at once (huggingface_hub's five retries,
    1+2+4+8+8 s, never start), in one error line."""
    sleeps = tmp_path.parent / f"{tmp_path.name}-sleeps.txt"
    out = tmp_path / "t"
    proc = tinytitan(None, "download-tokenizer", "--repo-id", REPO_ID, "--out", str(out), endpoint="http://127.0.0.1:9",
                     sleeps=sleeps)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not sleeps.exists() or sleeps.read_text().split() == []  # no backoff: the check comes first
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [proc.stderr.strip().splitlines()[-1]]
    assert "cannot reach the Hugging Face Hub" in errors[0] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "statuses,message",
    [
        ({"/api/models/org/tiny": 500}, "500"),
        ({"/api/models/org/tiny": 401}, "token was rejected \\(401\\)"),
    ],
)
def test_push_errors_are_one_line_and_change_nothing(debug_export, statuses, message):
    import re

    before = tree_digest(debug_export)
    with HubServer(statuses=statuses) as hub:
        proc = tinytitan(hub, "push", str(debug_export), "--repo-id", "org/tiny")
    assert re.search(message, one_line_error(proc))
    assert tree_digest(debug_export) == before
    assert [m for m, p, h in hub.requests if p.startswith("/api/models/org/tiny")]  # it did reach the server


def test_a_token_that_cannot_be_sent_is_refused_without_showing_it(debug_export, tmp_path):
    bad = "hf_s\u00e9cret"
    with HubServer() as hub:
        proc = tinytitan(hub, "push", str(debug_export), "--repo-id", "org/tiny", token=bad)
        assert "non-ASCII" in one_line_error(proc) and not hub.requests
        proc = tinytitan(hub, "download-tokenizer", "--out", str(tmp_path / "t"), token=bad)
        assert "non-ASCII" in one_line_error(proc) and not hub.requests


def test_a_token_with_a_final_newline_is_accepted_and_one_with_a_line_break_inside_is_refused(tmp_path):
    """HF_TOKEN="$(cat file)" style values keep working; two lines glued into one token do not."""
    with HubServer(hub_files()) as hub:
        proc = tinytitan(hub, "download-tokenizer", "--repo-id", REPO_ID, "--out", str(tmp_path / "a"),
                         token=TOKEN + "\n")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        sent = [h.get("authorization") or h.get("Authorization") for m, p, h in hub.requests if "/resolve/" in p]
        assert sent and all(a == f"Bearer {TOKEN}" for a in sent)  # sent without the newline
        asked = len(hub.requests)
        glued = TOKEN[:12] + "\n" + TOKEN[12:]
        proc = tinytitan(hub, "download-tokenizer", "--repo-id", REPO_ID, "--out", str(tmp_path / "b"), token=glued)
        line = one_line_error(proc)
        assert line == (
            "tinytitan: error: the Hugging Face token in HF_TOKEN holds a line break inside it (not shown): set it "
            'to the token alone, one line, e.g. HF_TOKEN="$(head -n 1 token-file)"'
        )
        assert "Traceback" not in proc.stderr and TOKEN[:12] not in proc.stderr and TOKEN[12:] not in proc.stderr
        assert len(hub.requests) == asked and not (tmp_path / "b").exists()  # refused before any request

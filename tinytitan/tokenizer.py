"""Tokenizer folders: the one loader (BOS/EOS ids, vocabulary), checking a folder, ``download-tokenizer``.

torchtitan's tokenizer interface over this loader is ``tinytitan.rank.spec.TrainingTokenizer``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinytitan.errors import TinytitanError

EMBEDDED_TOKENIZER = Path(__file__).parent / "assets" / "tokenizer"
LLAMA3_REPO_ID = "meta-llama/Meta-Llama-3-8B"


def check_tokenizer_dir(path: str | os.PathLike) -> Path:
    """Fail early, with the command that fixes it, when a tokenizer folder is missing."""
    from tinytitan.tokenizer_convert import ORIGINAL, convert_command

    folder = Path(path)
    if not (folder / "tokenizer.json").is_file() and (folder / ORIGINAL).is_file():
        raise TinytitanError(
            f"tokenizer folder {folder} has only {ORIGINAL} (Meta's tiktoken file): convert it with "
            f"`{convert_command(folder / ORIGINAL, folder)}`"
        )
    if not (folder / "tokenizer.json").is_file():
        raise TinytitanError(
            f"tokenizer folder {folder} has no tokenizer.json: run "
            f"`tinytitan download-tokenizer --repo-id {LLAMA3_REPO_ID} --out {folder}` "
            "or set [model] hf_assets_path to a folder that has one"
        )
    return folder


@dataclass(frozen=True)
class LoadedTokenizer:
    """A tokenizer folder, loaded once: the ``tokenizers`` object, its BOS/EOS ids and vocabulary size.

    Training, the data loader, prepared shards, export, evaluation and generation all
    take this, so a folder means the same ids everywhere.
    """

    folder: Path
    tokenizer: Any  # tokenizers.Tokenizer
    bos_id: int
    eos_id: int
    vocab_size: int  # with the added (special) tokens: the embedding rows it needs

    def encode(self, text: str) -> list[int]:
        """Ids without special tokens, as the data loader encodes a document's body
        (special-token strings in ``text`` are plain text: see ``plain_special_tokens``)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


def plain_special_tokens(tok) -> None:
    """Makes ``tok`` read special-token strings in text (``<|eot_id|>``) as plain text, as training does.

    Deliberate: a document that quotes ``<|eot_id|>`` (code, chat logs, docs about Llama)
    is text, and must not end a document or inject a control token mid-stream. This is
    Meta's ``encode_ordinary``; BOS/EOS come only from the loader's packing. A Hugging
    Face tokenizer loaded from the same files (``AutoTokenizer``) parses such strings into
    the special ids instead; see docs/data.md.
    """
    if hasattr(tok, "encode_special_tokens"):  # tokenizers >= 0.15
        tok.encode_special_tokens = True


def _special_id(tok, config: dict, kind: str, default: str) -> int | None:
    value = config.get(f"{kind}_token") or default
    if isinstance(value, dict):
        value = value.get("content")
    return tok.token_to_id(value)


def load_tokenizer(path: str | os.PathLike) -> LoadedTokenizer:
    """The one loader of a tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json``).

    BOS/EOS are the ``bos_token``/``eos_token`` of ``tokenizer_config.json`` (Llama 3's
    ``<|begin_of_text|>``/``<|end_of_text|>`` when it names none).
    """
    from tokenizers import Tokenizer

    folder = check_tokenizer_dir(path)
    try:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:  # the Rust parser raises a plain Exception on a corrupt file
        raise TinytitanError(
            f"{folder / 'tokenizer.json'} is not a valid tokenizer ({str(e).splitlines()[0][:120]}): "
            f"download it again with `tinytitan download-tokenizer --out {folder} --force`"
        ) from None
    config_path = folder / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    except json.JSONDecodeError as e:
        raise TinytitanError(f"{config_path} is not valid JSON ({e}): fix or download it again") from None
    plain_special_tokens(tok)
    bos = _special_id(tok, config, "bos", "<|begin_of_text|>")
    eos = _special_id(tok, config, "eos", "<|end_of_text|>")
    if bos is None or eos is None:
        raise TinytitanError(
            f"tokenizer {folder} has no BOS/EOS token: give it a tokenizer_config.json with "
            "bos_token '<|begin_of_text|>' and eos_token '<|end_of_text|>'"
        )
    return LoadedTokenizer(folder, tok, bos, eos, tok.get_vocab_size(with_added_tokens=True))


HUB_FILES = ("tokenizer.json", "tokenizer_config.json", "original/tokenizer.model")


def _http_status(e: BaseException) -> int | None:
    """The HTTP status behind a Hub error (or the error it wraps), if the server answered."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    while e is not None:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is not None:
            return status
        if isinstance(e, LocalEntryNotFoundError):  # a refused metadata request: "403 Forbidden: ..."
            match = re.match(r"(\d{3}) ", str(e))
            if match:
                return int(match.group(1))
        e = e.__cause__ or e.__context__
    return None


def _download_error(e: BaseException, repo_id: str, filename: str, token: str | None) -> TinytitanError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(e, GatedRepoError):
        if not token:
            return TinytitanError(
                f"{repo_id} is gated and no Hugging Face token was found: set HF_TOKEN or run `hf auth login`"
            )
        return TinytitanError(
            f"{repo_id} is gated and this token has no access: request access on https://huggingface.co/{repo_id}"
        )
    if isinstance(e, RepositoryNotFoundError):
        hint = "set HF_TOKEN or run `hf auth login`" if not token else "check the repo id and the token's access"
        return TinytitanError(f"repo {repo_id} not found or not visible without a token: {hint}")
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(e, FileNotFoundError) and not isinstance(e, LocalEntryNotFoundError):  # a local folder as --repo-id
        return TinytitanError(
            f"folder {repo_id} has no {filename}: give a folder laid out like the Hub repo "
            "(tokenizer.json, tokenizer_config.json, original/tokenizer.model)"
        )
    status = _http_status(e)
    if status is not None:
        if status >= 500:
            fix = "retry later (a server error)"
        elif status == 401:
            fix = "the token was rejected: run `hf auth login` again or set a valid HF_TOKEN"
        elif status == 403:
            fix = f"this token has no access: request it on the repo's page ({repo_id})"
        else:
            fix = "check the repo id and that the file exists"
        return TinytitanError(f"the Hub answered HTTP {status} for {repo_id}/{filename}: {fix}")
    return TinytitanError(
        f"cannot reach the Hugging Face Hub to fetch {repo_id}/{filename}: check the network "
        "(or copy the tokenizer folder from a machine that has it)"
    )


def _missing(e: BaseException) -> bool:
    """The repo answered that it has no such file (as opposed to refusing, failing, or not answering)."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if isinstance(e, LocalEntryNotFoundError):  # the Hub could not be reached (and nothing is cached)
        return False
    status = _http_status(e)
    if status is not None:  # 401/403/5xx are refusals or failures, never "not there"
        return status == 404
    return isinstance(e, (EntryNotFoundError, FileNotFoundError))


def _local_client(folder: Path):
    """``hf_hub_download``'s keywords, served from a local folder (a copy of a Hub repo)."""

    def fetch(*, repo_id, filename, local_dir, token):
        source = folder / filename
        if not source.is_file():
            raise FileNotFoundError(str(source))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    return fetch


def _fetch_into(download, repo_id: str, tmp: Path, token: str | None) -> None:
    """The Hub files into ``tmp``; a repo with only ``original/tokenizer.model`` is converted."""
    from tinytitan.tokenizer_convert import ORIGINAL, write_converted

    def get(filename: str, optional: bool = False) -> bool:
        try:
            download(repo_id=repo_id, filename=filename, local_dir=str(tmp), token=token)
            return True
        except (OSError, ConnectionError) as e:  # HfHubHTTPError and the entry errors are OSErrors
            if optional and _missing(e):
                return False
            raise _download_error(e, repo_id, filename, token) from None

    if get("tokenizer.json", optional=True):
        get("tokenizer_config.json")
        get(ORIGINAL, optional=True)  # training never reads it; a local copy may lack it
        return
    if not get(ORIGINAL, optional=True):
        raise TinytitanError(
            f"{repo_id} has neither tokenizer.json nor {ORIGINAL}: choose a repo (or folder) with a Llama 3 tokenizer"
        )
    print(f"{repo_id} has no tokenizer.json: converting {ORIGINAL} (Meta's tiktoken file)", flush=True)
    write_converted(tmp / ORIGINAL, tmp)


def check_hub_reachable(repo_id: str, timeout_s: float = 5.0) -> None:
    """One line at once when the Hub cannot be reached (offline mode, no DNS, no route), instead of
    huggingface_hub's five retries over 24 s."""
    import os
    import socket
    from urllib.parse import urlsplit

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise TinytitanError(
            f"HF_HUB_OFFLINE is set, so {repo_id} cannot be fetched: unset it, or give --repo-id a local copy of the repo"
        )
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    from urllib.request import getproxies, proxy_bypass

    if getproxies().get(endpoint.scheme or "https") and not proxy_bypass(host):
        return  # behind a proxy a direct connection says nothing: huggingface_hub goes through the proxy
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        cause = e.strerror or type(e).__name__
        raise TinytitanError(
            f"cannot reach the Hugging Face Hub ({host}:{port}: {cause}) to fetch {repo_id}: check the network, "
            "or give --repo-id a local copy of the repo (or copy the tokenizer folder from a machine that has it)"
        ) from None


def download_tokenizer(
    repo_id: str, out: Path, token: str | None = None, client=None, force: bool = False
) -> list[Path]:
    """Fetches the tokenizer files of a (gated) Hub repo, or a local copy of one, into ``out``, all or nothing.

    The files land in a temporary folder beside ``out``, are loaded once (BOS/EOS
    must be found), and only then renamed into place: a failed download leaves
    ``out`` as it was. A source with only ``original/tokenizer.model`` (the seed's
    ``--tokenizer_path original``) is converted (``tinytitan convert-tokenizer``).
    ``client`` replaces ``hf_hub_download`` (same keywords).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from tinytitan.folders import check_output_folder, make_temp_dir, replace_folder

    out = Path(out)
    local = Path(repo_id) if client is None and Path(repo_id).is_dir() else None
    if local is None:
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            raise TinytitanError(
                f"--repo-id {repo_id!r} is not a Hub repo id nor a folder: write it as org/name or give an existing folder"
            ) from None
    check_output_folder(out, [("the source folder", local)] if local else [], force)
    if local is None and client is None:
        check_hub_reachable(repo_id)
    download = _local_client(local) if local else (client or hf_hub_download)
    tmp = make_temp_dir(out)
    try:
        _fetch_into(download, repo_id, tmp, token)
        load_tokenizer(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / f for f in HUB_FILES if (out / f).is_file()]


def configure(parser) -> None:
    parser.add_argument(
        "--repo-id", default=LLAMA3_REPO_ID, help=f"Hub model repo or a local copy of one (default {LLAMA3_REPO_ID})"
    )
    parser.add_argument("--out", type=Path, default=Path("assets/tokenizer/llama3"), help="folder to write")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")


def run(args) -> int:
    from tinytitan.hf_token import hub_token

    default = " (the default --repo-id)" if args.repo_id == LLAMA3_REPO_ID else ""
    print(f"tinytitan: fetching the tokenizer of {args.repo_id}{default} into {args.out}", flush=True)
    token = hub_token()  # never printed
    for path in download_tokenizer(args.repo_id, args.out, token=token, force=args.force):
        print(f"wrote {path}")
    return 0

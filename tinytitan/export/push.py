"""``tinytitan push``: a verified export -> a Hugging Face repo, private unless asked otherwise.

The folder is checked the way ``export`` checks it (files, config against the
flavor, logits parity of transformers against torchtitan on the folder's own
weights, greedy generation) before any network call, so a hand-edited or
half-written folder never reaches the Hub. ``--dry-run`` stops there and prints
the plan and what the user has still to decide (license, datasets, the data's licenses, visibility).
``--license`` and ``--dataset`` write the user's choices into the card before the upload.

The Hub client is a parameter (``HfApi`` by default), so tests record the calls
instead of talking to the network. The token comes from ``HF_TOKEN`` or the
saved login and is only ever handed to the client: no message here contains it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tinytitan.errors import TinytitanError

HUB_URL = "https://huggingface.co"
# The Hub's rules: namespace/name, letters, digits, '-', '_', '.', no '--' or '..', no leading/trailing '-' or '.'.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
_NETWORK_ERRORS = {
    "ConnectError",
    "ConnectTimeout",
    "TimeoutException",
    "TransportError",
    "NetworkError",
    "ReadTimeout",
}


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id or "") or "--" in repo_id or ".." in repo_id:
        raise TinytitanError(
            f"repo id {repo_id!r} is malformed: use ORG/NAME (letters, digits, '-', '_', '.'; e.g. my-org/tiny-llama-1b)"
        )
    return repo_id


@dataclass
class PushPlan:
    folder: Path
    repo_id: str
    private: bool
    revision: str | None
    collection: str | None
    commit_message: str
    files: list[tuple[str, int]] = field(default_factory=list)

    def describe(self) -> str:
        total = sum(size for _, size in self.files)
        lines = [
            f"repo        {self.repo_id} ({'private' if self.private else 'PUBLIC'})",
            f"revision    {self.revision or 'main'}",
            f"collection  {self.collection or '-'}",
            f"message     {self.commit_message}",
            f"files       {len(self.files)}, {total / 2**20:.1f} MiB",
        ]
        lines += [f"  {size / 2**20:10.2f} MiB  {name}" for name, size in self.files]
        return "\n".join(lines)


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in _NETWORK_ERRORS or cls.__name__ == "ConnectionError" for cls in type(exc).__mro__)


@contextmanager
def hub_errors(action: str, repo_id: str):
    """Hub exceptions -> one-line errors that say what to do (never echoing the request or the token)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        yield
    except RepositoryNotFoundError:
        raise TinytitanError(
            f"cannot {action} {repo_id}: repo not found or not visible to this token; check the id and the token's access"
        ) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 401:
            raise TinytitanError(
                f"the Hugging Face token was rejected (401) while trying to {action} {repo_id}: "
                "run `hf auth login` again or set a valid HF_TOKEN"
            ) from None
        if status == 403:
            raise TinytitanError(
                f"no permission to {action} {repo_id} (403): use a token with write access to its namespace"
            ) from None
        if status == 404:
            raise TinytitanError(f"cannot {action} {repo_id}: not found (404); check the id") from None
        raise TinytitanError(f"the Hub refused to {action} {repo_id} (HTTP {status}): retry later") from None
    except Exception as e:
        if _is_network_error(e):
            raise TinytitanError(
                f"cannot reach the Hugging Face Hub to {action} {repo_id}: check the network and retry"
            ) from None
        raise


def plan_push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    public: bool = False,
    collection: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> PushPlan:
    check_repo_id(repo_id)
    folder = Path(folder)
    files = sorted(
        (str(p.relative_to(folder)), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    message = commit_message or f"Upload {folder.name} with tinytitan"
    return PushPlan(folder, repo_id, not public, revision, collection, message, files)


def verify_folder(folder: Path, log: Callable[[str], None] = print):
    """``export``'s verification (``tinytitan.export.verify``) on the folder's own weights; returns it."""
    from tinytitan.export.static_checks import check_hf_folder, reference_from_hf
    from tinytitan.export.tokenizer_files import read_tokenizer
    from tinytitan.export.verify import meta_part, verify_export
    from tinytitan.models import flavor_args

    info = check_hf_folder(folder)
    args = flavor_args(info.flavor)
    tok = read_tokenizer(folder)
    if tok.eos_id != info.config.get("eos_token_id") or tok.bos_id != info.config.get("bos_token_id"):
        raise TinytitanError(f"{folder}/config.json's bos/eos ids differ from its tokenizer's: export again")
    result = verify_export(folder, args, reference_from_hf(folder, args), hf=True, meta=meta_part(folder),
                           seq_len=info.seq_len, dtype=info.dtype, eos_id=tok.eos_id, log=lambda _: None)  # fmt: skip
    log(f"verified {folder} (flavor {info.flavor}): {result.describe()}")
    recorded = (info.provenance or {}).get("verification")
    if recorded:
        log(
            f"export checked it against {info.provenance.get('source')}: max abs logit diff {recorded['max_abs_diff']:.2e}"
        )
    else:
        log("note: exported with --no-verify, so its match with the training checkpoint was not checked")
    return result


CARD = "README.md"
PROVENANCE = "tinytitan.json"


@dataclass
class CardFacts:
    """What an export's card says about publishing: its license, Hub datasets and the data's licenses."""

    license: str
    datasets: list[str]
    data_licenses: list[tuple[str, str]]


def card_facts(folder: Path) -> CardFacts:
    """The card's front matter (license, datasets) and tinytitan.json's sources (their declared licenses)."""
    import json

    license, datasets, in_datasets = "", [], False
    text = (folder / CARD).read_text() if (folder / CARD).is_file() else ""
    front = text.split("---")[1] if text.startswith("---") and text.count("---") >= 2 else ""
    for line in front.splitlines():
        if line.startswith("license:"):
            license = line.partition(":")[2].strip()
        in_datasets = line.startswith("datasets:") or (in_datasets and line.startswith("- "))
        if in_datasets and line.startswith("- "):
            datasets.append(line[2:].strip())
    record = {}
    if (folder / PROVENANCE).is_file():
        record = json.loads((folder / PROVENANCE).read_text())
    data = (record.get("trained") or {}).get("data") or []
    return CardFacts(license, datasets, [(d.get("name", "?"), d.get("license", "")) for d in data])


def restated(folder: Path, license: str | None, datasets: list[str]) -> dict[str, str]:
    """README.md and tinytitan.json with the license and datasets of ``push --license/--dataset`` (file -> text)."""
    import json

    from tinytitan.export.published import UNCHOSEN_LICENSE

    facts = card_facts(folder)
    chosen = license or facts.license or UNCHOSEN_LICENSE
    named = [*facts.datasets, *(d for d in datasets if d not in facts.datasets)]
    text = (folder / CARD).read_text()
    _, front, body = text.split("---", 2)
    kept: list[str] = []
    in_datasets = False
    for line in front.strip("\n").splitlines():
        in_datasets = line.startswith("datasets:") or (in_datasets and line.startswith("- "))
        if not in_datasets:
            kept.append(f"license: {chosen}" if line.startswith("license:") else line)
    if named:
        kept += ["datasets:", *(f"- {d}" for d in named)]
    body = re.sub(r"^\| License \| .* \|$", f"| License | {chosen} |", body, flags=re.M)
    out = {CARD: "---\n" + "\n".join(kept) + "\n---" + body}
    if (folder / PROVENANCE).is_file():
        record = json.loads((folder / PROVENANCE).read_text())
        record["license"], record["datasets"] = chosen, named
        out[PROVENANCE] = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    return out


def still_to_decide(folder: Path, *, license: str | None, datasets: list[str], private: bool) -> list[str]:
    from tinytitan.export.published import decisions

    facts = card_facts(folder)
    named = [*facts.datasets, *datasets]
    return decisions(license=license or facts.license, datasets=named, data_licenses=facts.data_licenses,
                     private=private)  # fmt: skip


def _repo_info(client, repo_id: str):
    """The repo's info, or ``None`` when it does not exist (yet)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    with hub_errors("read", repo_id):
        try:
            return client.repo_info(repo_id, repo_type="model")
        except RepositoryNotFoundError:
            return None


def default_client(token: str):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    public: bool = False,
    collection: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    client=None,
    token: str | None = None,
    verify: bool = True,
    log: Callable[[str], None] = print,
    license: str | None = None,
    datasets: list[str] | None = None,
) -> str | None:
    """Uploads ``folder`` to ``repo_id``; returns the repo URL (``None`` for a dry run).

    ``license`` and ``datasets`` (Hub dataset ids) restate the card's metadata and tinytitan.json before the
    upload (not in a dry run, which only says what would change and what is still undecided)."""
    datasets = list(datasets or [])
    for dataset in datasets:
        if not REPO_ID.match(dataset):
            raise TinytitanError(f"--dataset {dataset!r} is not a Hub dataset id: write it as ORG/NAME")
    plan = plan_push(
        folder, repo_id, public=public, collection=collection, revision=revision, commit_message=commit_message
    )
    from tinytitan.export.edits import check_unedited

    check_unedited(plan.folder, log, static=verify)
    if not dry_run and token is None:
        from tinytitan.hf_token import hub_token

        token = hub_token()  # HF_TOKEN, else the saved login
    if not dry_run and not token:
        raise TinytitanError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    if verify:
        verify_folder(plan.folder, log)
    undecided = still_to_decide(plan.folder, license=license, datasets=datasets, private=plan.private)
    if dry_run:
        log("dry run, nothing uploaded:\n" + plan.describe())
        if license or datasets:
            log(
                f"the card would state: license {license or 'as it is'}, datasets {', '.join(datasets) or 'as they are'}"
            )
        log("still to decide before publishing:\n" + "\n".join(f"  - {line}" for line in undecided)
            if undecided else "nothing left to decide: license, datasets and visibility are chosen")  # fmt: skip
        return None
    if license or datasets:
        for name, text in restated(plan.folder, license, datasets).items():
            tmp = plan.folder / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, plan.folder / name)
        log(f"card: license {license or 'unchanged'}, datasets {', '.join(datasets) or 'unchanged'}")
    for line in undecided:
        log(f"note: {line}")
    client = client if client is not None else default_client(token)

    info = _repo_info(client, repo_id)
    if info is None:
        with hub_errors("create", repo_id):
            client.create_repo(repo_id, repo_type="model", private=plan.private, exist_ok=True)
        log(f"created {'private' if plan.private else 'public'} repo {repo_id}")
    elif getattr(info, "private", None) is False and plan.private:
        raise TinytitanError(
            f"{repo_id} exists and is public: pass --public to upload to it, or make it private on the Hub first"
        )
    elif getattr(info, "private", None) and public:
        with hub_errors("change the visibility of", repo_id):
            client.update_repo_settings(repo_id, repo_type="model", private=False)
        log(f"made {repo_id} public (--public)")
    if revision and revision != "main":
        with hub_errors(f"create branch {revision} in", repo_id):
            client.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    with hub_errors("upload to", repo_id):
        client.upload_folder(
            repo_id=repo_id, folder_path=str(plan.folder), repo_type="model",
            revision=revision, commit_message=plan.commit_message, ignore_patterns=[".*", "**/.*"],
        )  # fmt: skip
    if collection:
        with hub_errors(f"add to collection {collection}", repo_id):
            client.add_collection_item(collection, item_id=repo_id, item_type="model", exists_ok=True)
        log(f"added {repo_id} to collection {collection}")
    endpoint = str(getattr(client, "endpoint", None) or HUB_URL).rstrip("/")
    url = f"{endpoint}/{repo_id}" + (f"/tree/{revision}" if revision and revision != "main" else "")
    return url


def configure(parser) -> None:
    parser.add_argument("folder", type=Path, help="a folder written by `tinytitan export`")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--public", action="store_true", help="make the repo public (default: private)")
    parser.add_argument(
        "--collection", default=None, help="collection slug to add the repo to, e.g. my-org/tiny-llamas-0123"
    )
    parser.add_argument("--revision", default=None, help="branch to upload to (created if missing; default main)")
    parser.add_argument("--commit-message", default=None, help="commit message (default: 'Upload DIR with tinytitan')")
    parser.add_argument("--dry-run", action="store_true", help="check the folder and print the plan; no network")
    parser.add_argument(
        "--license",
        default=None,
        help="the model's license (a Hub license id, e.g. apache-2.0): written into the card first",
    )
    parser.add_argument(
        "--dataset",
        dest="datasets",
        action="append",
        default=[],
        metavar="ORG/NAME",
        help="a Hub dataset the model was trained on, for the card's metadata (repeat for several)",
    )


def run(args) -> int:
    url = push(
        args.folder, args.repo_id, public=args.public, collection=args.collection, revision=args.revision,
        commit_message=args.commit_message, dry_run=args.dry_run, license=args.license, datasets=args.datasets,
    )  # fmt: skip
    if url:
        print(url)
    return 0

"""Tokenizer folders: where they live, checking them, building torchtitan's tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

from tinytitan.errors import TinytitanError

EMBEDDED_TOKENIZER = Path(__file__).parent / "assets" / "tokenizer"
LLAMA3_REPO_ID = "meta-llama/Meta-Llama-3-8B"


def check_tokenizer_dir(path: str | os.PathLike) -> Path:
    """Fail early, with the command that fixes it, when a tokenizer folder is missing."""
    folder = Path(path)
    if not (folder / "tokenizer.json").is_file():
        raise TinytitanError(
            f"tokenizer folder {folder} has no tokenizer.json: run "
            f"`tinytitan download-tokenizer --repo-id {LLAMA3_REPO_ID} --out {folder}` "
            "or set [model] hf_assets_path to a folder that has one"
        )
    return folder


def build_tokenizer(job_config):
    """TrainSpec hook: torchtitan's HF tokenizer, after checking the folder exists."""
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    folder = check_tokenizer_dir(job_config.model.hf_assets_path)
    return HuggingFaceTokenizer(str(folder))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "original/tokenizer.model")


def download_tokenizer(repo_id: str, out: Path, token: str | None = None, client=None) -> list[Path]:
    """Fetch the tokenizer files of a (gated) Hub repo; one-line errors for the usual failures."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    download = client or hf_hub_download
    written = []
    for filename in TOKENIZER_FILES:
        try:
            path = download(repo_id=repo_id, filename=filename, local_dir=str(out), token=token)
        except GatedRepoError:
            if not token:
                raise TinytitanError(
                    f"{repo_id} is gated and no Hugging Face token was found: set HF_TOKEN or run `hf auth login`"
                ) from None
            raise TinytitanError(
                f"{repo_id} is gated and this token has no access: request access on https://huggingface.co/{repo_id}"
            ) from None
        except RepositoryNotFoundError:
            hint = "set HF_TOKEN or run `hf auth login`" if not token else "check the repo id and the token's access"
            raise TinytitanError(f"repo {repo_id} not found or not visible without a token: {hint}") from None
        except (LocalEntryNotFoundError, ConnectionError, OSError) as e:
            if isinstance(e, HfHubHTTPError):
                raise TinytitanError(
                    f"download of {filename} from {repo_id} failed ({type(e).__name__}): retry later"
                ) from None
            raise TinytitanError(
                f"cannot reach the Hugging Face Hub to fetch {repo_id}/{filename}: check the network "
                "(or copy the tokenizer folder from a machine that has it)"
            ) from None
        written.append(Path(path))
    return written


def configure(parser) -> None:
    parser.add_argument("--repo-id", default=LLAMA3_REPO_ID, help=f"Hub model repo (default {LLAMA3_REPO_ID})")
    parser.add_argument("--out", type=Path, default=Path("assets/tokenizer/llama3"), help="folder to write")


def run(args) -> int:
    from huggingface_hub import get_token

    token = get_token()  # HF_TOKEN or the saved login; never printed
    for path in download_tokenizer(args.repo_id, args.out, token=token):
        print(f"wrote {path}")
    return 0

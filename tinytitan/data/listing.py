"""Which files a ``[data]`` source names: a local folder or a Hub dataset, and a glob inside it.

The I/O half of the data config's checks (``Data.validate`` is the pure half): a folder that
does not exist, a glob that matches nothing and a held-out glob that overlaps the training files
are refused here, with the layouts the sources are published in.
"""

from __future__ import annotations

import glob
import os
import re

from tinytitan.data.config import SLIMPAJAMA_LAYOUT, SUFFIXES, Data, Source
from tinytitan.errors import TinytitanError

_HUB_PREFIX = "hf://datasets/"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_repo(path: str) -> str | None:
    """The Hub dataset id when `path` names one rather than a local folder."""
    if path.startswith(_HUB_PREFIX):
        return path[len(_HUB_PREFIX) :].strip("/")
    if os.path.exists(path) or not _HUB_ID.match(path):
        return None
    # 'data/SlimPajama-627B' with a local 'data/' folder is a missing local path, not a Hub id.
    if os.path.isdir(path.split("/", 1)[0]):
        return None
    return path


def _has_suffix(name: str) -> bool:
    return any(name.endswith(s) for s in SUFFIXES)


def list_files(path: str, pattern: str) -> list[str]:
    """Files matched by `pattern` inside `path`, as sorted paths relative to `path`."""
    repo = hub_repo(path)
    if repo is not None:
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        root = f"datasets/{repo}"
        found = fs.glob(f"{root}/{pattern}")
        rels = [f[len(root) + 1 :] for f in found]
    else:
        root = os.path.abspath(path)
        found = glob.glob(os.path.join(root, pattern), recursive=True)
        rels = [os.path.relpath(f, root) for f in found if os.path.isfile(f)]
    return sorted(r.replace(os.sep, "/") for r in rels if _has_suffix(r))


def _fail(source: Source, what: str, fix: str) -> TinytitanError:
    return TinytitanError(f"data source {source.name!r} (path {source.path!r}): {what}; {fix}")


def list_source(s: Source) -> list[str]:
    """The training files of one source (sorted, relative to its path); refuses a missing folder or an empty glob."""
    repo = hub_repo(s.path)
    if repo is None and not os.path.isdir(s.path):
        raise _fail(
            s,
            f"folder {os.path.abspath(s.path)} does not exist",
            f"download the data there or fix path ({SLIMPAJAMA_LAYOUT})",
        )
    try:
        matched = list_files(s.path, s.files)
    except Exception as e:  # Hub listing: network or a wrong id
        raise _fail(s, f"cannot list {s.files!r} ({type(e).__name__}: {e})", "check the Hub id / network") from e
    if not matched:
        raise _fail(
            s,
            f"files = {s.files!r} matches no .jsonl/.jsonl.zst/.json.gz/.parquet file",
            f"fix the glob ({SLIMPAJAMA_LAYOUT})",
        )
    if s.validation_files:
        held = list_files(s.path, s.validation_files)
        if not held:
            raise _fail(
                s,
                f"validation_files = {s.validation_files!r} matches no file",
                "fix the glob (SlimPajama: 'validation/chunk*/*.jsonl.zst') or remove it",
            )
        overlap = sorted(set(held) & set(matched))
        if overlap:
            raise _fail(s, f"{overlap[0]} is both a training and a validation file", "make the globs disjoint")
    return matched


def list_sources(data: Data) -> dict[str, list[str]]:
    """The training files of every source, by name."""
    return {s.name: list_source(s) for s in data.sources}

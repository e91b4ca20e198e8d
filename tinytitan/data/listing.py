"""Which files a ``[data]`` source names: a local folder or a Hub dataset, and a glob inside it.

The I/O half of the data config's checks (``Data.validate`` is the pure half): a folder that
does not exist, a glob that matches nothing and a held-out glob that overlaps the training files
are refused here, with the layouts the sources are published in.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Iterator

from tinytitan.data.config import SLIMPAJAMA_LAYOUT, SUFFIXES, Data, Source
from tinytitan.errors import TinytitanError

logger = logging.getLogger("tinytitan.data")

_HUB_PREFIX = "hf://datasets/"
_WARNED: set[str] = set()
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
    """Files matched by `pattern` inside `path`, as sorted paths relative to `path`.

    A local file reached by several paths (a symlinked folder, a ``loop -> .`` symlink, a hard
    link) is listed once, under its first path in sorted order, with one warning naming the others.
    """
    repo = hub_repo(path)
    if repo is None:
        files, duplicates, cycles = local_files(path, pattern)
        said = []
        if duplicates:
            said.append(f"{len(duplicates)} path(s) lead to files listed already (symlinks or hard links): "
                        + _some(f"{dup} (= {first})" for dup, first in duplicates))  # fmt: skip
        if cycles:
            said.append(f"{len(cycles)} symlink(s) lead back to a folder above them, not followed: {_some(cycles)}")
        message = f"data: {pattern!r} in {os.path.abspath(path)}: {'; '.join(said)}; each file is read once"
        if said and message not in _WARNED:  # once per process: the start checks and the plan both list
            _WARNED.add(message)
            logger.warning(message)
        return files
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem()
    root = f"datasets/{repo}"
    rels = [f[len(root) + 1 :] for f in fs.glob(f"{root}/{pattern}")]
    return sorted(r for r in rels if _has_suffix(r))


def _some(items, n: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def local_files(path: str, pattern: str) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """The distinct files `pattern` matches in the folder `path` (sorted relative paths), the other
    paths that reached one of them (``(duplicate, the listed path)`` pairs), and the symlinks not
    followed because they lead back to a folder above them.

    Files are the same when their (device, inode) is: a symlink's target or a hard link. ``**``
    never descends into a folder that is its own ancestor, so a symlink cycle ends there (Python's
    glob followed ``loop -> .`` 40 levels deep, listing one file 41 times).
    """
    root = os.path.abspath(path)
    cycles: list[str] = []
    matched = sorted(set(_match(root, _pattern_parts(pattern), cycles)))
    files: list[str] = []
    first: dict[tuple[int, int], str] = {}
    duplicates: list[tuple[str, str]] = []
    for rel in matched:
        if not _has_suffix(rel):
            continue
        st = os.stat(os.path.join(root, rel))
        key = (st.st_dev, st.st_ino)
        if key in first:
            duplicates.append((rel, first[key]))
            continue
        first[key] = rel
        files.append(rel)
    return files, duplicates, sorted(set(cycles))


def file_identity(path: str, rel: str) -> tuple[int, int] | None:
    """(device, inode) of a local file: two paths to one file compare equal; None on the Hub."""
    if hub_repo(path) is not None:
        return None
    st = os.stat(os.path.join(path, rel))
    return st.st_dev, st.st_ino


def _pattern_parts(pattern: str) -> list[str]:
    parts = [p for p in pattern.replace(os.sep, "/").split("/") if p not in ("", ".")]
    if parts and parts[-1] == "**":  # as glob: everything below, i.e. '**/*' for files
        parts.append("*")
    return parts


def _has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def _subfolders(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return [e for e in it if _is_dir(e)]
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _match(root: str, parts: list[str], cycles: list[str]) -> Iterator[str]:
    """Relative paths of the files under `root` that match the glob components `parts`, as
    ``glob.glob(recursive=True)`` does (``*`` and ``**`` skip hidden names), without cycles: a
    folder that is its own ancestor is not entered, and its path is added to `cycles`."""

    def walk(folder: str, rel: str, i: int, ancestors: frozenset) -> Iterator[str]:
        part, last = parts[i], i == len(parts) - 1
        if part == "**":
            yield from walk(folder, rel, i + 1, ancestors)  # zero folders
            for entry in _subfolders(folder):
                key = _identity(entry.path)
                if entry.name.startswith(".") or key is None:
                    continue  # hidden, or gone
                if key in ancestors:  # a symlink back to a folder above: a cycle
                    cycles.append(rel + entry.name)
                    continue
                yield from walk(entry.path, rel + entry.name + "/", i, ancestors | {key})
            return
        if _has_magic(part):
            try:
                with os.scandir(folder) as it:
                    names = [e.name for e in it]
            except OSError:
                return
            hidden_ok = part.startswith(".")
            names = [n for n in names if fnmatch.fnmatchcase(n, part) and (hidden_ok or not n.startswith("."))]
        else:
            names = [part]
        for name in names:
            full = os.path.join(folder, name)
            if last:
                if os.path.isfile(full):
                    yield os.path.normpath(rel + name).replace(os.sep, "/")
            elif os.path.isdir(full):
                key = _identity(full)
                yield from walk(full, rel + name + "/", i + 1, ancestors | {key} if key else ancestors)

    if not parts:
        return iter(())
    return walk(root, "", 0, frozenset({_identity(root)}))


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
        training = {file_identity(s.path, r) or r: r for r in matched}
        overlap = sorted(training[k] for k in (file_identity(s.path, r) or r for r in held) if k in training)
        if overlap:
            raise _fail(s, f"{overlap[0]} is both a training and a validation file", "make the globs disjoint")
    return matched


def list_sources(data: Data) -> dict[str, list[str]]:
    """The training files of every source, by name."""
    return {s.name: list_source(s) for s in data.sources}

"""Is a checkpoint folder complete? And keeping, purging and disk-full errors built on that answer.

A DCP save writes every rank's ``.distcp`` files, then ``.metadata`` last. A folder
without ``.metadata`` is partial; so is one whose ``.distcp`` files are shorter than
the storage offsets ``.metadata`` records (a truncated copy, a disk that filled).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tinytitan.errors import TinytitanError
from tinytitan.folders import free_bytes
from tinytitan.run.folder import STEP_DIR
from tinytitan.run.hold import remove_unless_held
from tinytitan.run.steps import is_healthy

METADATA = ".metadata"


def folder_problem(folder: str | os.PathLike) -> str | None:
    """None for a complete checkpoint folder, else what is wrong with it, in a few words. ``.metadata`` is
    read without torch where ``tinytitan.checkpoint.light`` can, else (and for a damaged one) by torch."""
    from tinytitan.checkpoint import light

    folder = Path(folder)
    if not (folder / METADATA).is_file():
        return "no .metadata (the save did not finish)"
    try:
        storage = light.read_metadata(folder).storage_data
    except light.Unreadable:
        from torch.distributed.checkpoint import FileSystemReader

        try:
            storage = FileSystemReader(str(folder)).read_metadata().storage_data
        except Exception as e:  # a truncated .metadata does not unpickle
            return f".metadata is unreadable ({type(e).__name__})"
    needed: dict[str, int] = {}
    for info in (storage or {}).values():
        end = info.offset + info.length
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, end in sorted(needed.items()):
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            return f"{name} is missing"
        if size < end:
            return f"{name} is truncated ({size} of {end} bytes)"
    return None


def step_folders(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """The ``step-N`` folders of a checkpoint folder, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def saved_step_folders(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """The ``step-N`` folders whose save finished (DCP writes ``.metadata`` last), oldest first.

    Their data files may still be truncated since: ``folder_problem`` reads them.
    """
    return [(step, path) for step, path in step_folders(folder) if (path / METADATA).is_file()]


def newest_complete(folder: str | os.PathLike) -> tuple[int, Path] | None:
    """The newest complete checkpoint, the one a resume loads (tinytitan.rank.trainer skips partial ones)."""
    for step, path in reversed(saved_step_folders(folder)):
        if folder_problem(path) is None:
            return step, path
    return None


def purge_checkpoints(folder: str | os.PathLike, keep: int, keep_healthy: bool = False) -> list[Path]:
    """Keep the newest `keep` complete checkpoints; delete older ones and partial folders older than those.

    Partial folders newer than the newest complete one stay: one may be a save in
    flight, and the next save of that step replaces it. ``keep_healthy`` ([guard]): when none
    of the kept ones is healthy (``tinytitan.run.steps.is_healthy``), the newest healthy one
    older than them stays too. Returns what was deleted.
    """
    steps = step_folders(folder)
    complete = [(s, p) for s, p in steps if (p / METADATA).is_file() and folder_problem(p) is None]
    if not complete:
        return []
    kept = complete[-keep:]
    oldest_kept = kept[0][0]
    also_kept = None
    if keep_healthy and not any(is_healthy(p) for _, p in kept):
        also_kept = next((s for s, p in reversed(complete[:-keep]) if is_healthy(p)), None)
    deleted = []
    for step, path in steps:
        if step >= oldest_kept or step == also_kept:
            continue
        if remove_unless_held(path):  # a reader (export, eval, ...) holding it: the next purge tries again
            deleted.append(path)
    return deleted


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _is_disk_full(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left" in text or "unexpected pos" in text or "Disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def disk_full_error(exc: BaseException, folder: str | os.PathLike) -> TinytitanError | None:
    """A one-line error for a save that ran out of space, or None if `exc` is something else."""
    if not _is_disk_full(exc):
        return None
    folder = Path(folder)
    steps = step_folders(folder)
    complete = [p for _, p in steps if folder_problem(p) is None]
    sizes = [folder_bytes(p) for _, p in steps]
    needed = max(sizes, default=0)
    free = free_bytes(folder)
    last = "no complete checkpoint exists yet"
    if complete:
        last = f"the last complete checkpoint, {complete[-1].name}, is intact and a rerun resumes from it"
    newest_complete_step = max((s for s, p in steps if p in complete), default=-1)
    partial = [p for s, p in steps if s > newest_complete_step]
    if partial:  # it keeps the disk full: say which folder to remove (a rank may still be writing into it)
        last += f"; remove the partial {' '.join(str(p) for p in partial)} it left (rm -r) to free its space"
    return TinytitanError(
        f"no space left in {folder} while saving a checkpoint: one needs at least {_size(needed)}, "
        f"{_size(free)} is free; free space there or set --checkpoint.folder elsewhere ({last})"
    )

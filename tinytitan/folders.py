"""Writing an output folder without ever losing an input: checks, a temp folder, one rename.

Every command that writes a folder (export, checkpoint upgrade) checks it here
first. ``--force`` may replace a previous output; it may never replace, or
write inside, a folder the command reads, nor a folder that contains one.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tinytitan.errors import TinytitanError


def _overlaps(a: Path, b: Path) -> bool:
    """Same folder, or one inside the other (after resolving links and ``..``)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_output_folder(out: Path, inputs: Iterable[tuple[str, Path]], force: bool, flag: str = "--out") -> None:
    """Refuses an ``out`` that overlaps an input (even with ``force``), is a file, or holds files without ``force``.

    ``inputs`` are ``(what, path)`` pairs, e.g. ``("the checkpoint", ckpt)``, named in the error. A run
    folder needs no entry of its own: it contains the checkpoint, so ``--out RUN`` already overlaps.
    """
    for what, path in inputs:
        if path is not None and _overlaps(out, Path(path)):
            raise TinytitanError(
                f"{flag} {out} overlaps {what} {path}: writing there could destroy an input, "
                f"even with --force; choose a folder outside it"
            )
    if out.exists() and not out.is_dir():
        raise TinytitanError(f"{flag} {out} is a file: choose a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise TinytitanError(f"{flag} {out} is not empty: pass --force to replace it, or choose another folder")


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds (or will hold) ``path``."""
    return shutil.disk_usage(_existing_parent(Path(path))).free


def check_free_space(out: Path, need: int, what: str, flag: str = "--out") -> None:
    """Refuses to start a write of ``need`` bytes that cannot fit, before anything is written."""
    free = free_bytes(out)
    if free < need:
        raise TinytitanError(
            f"{flag} {out}: {what} needs {need / 2**20:.1f} MiB but that disk has {free / 2**20:.1f} MiB free; "
            "free space there or choose another folder"
        )


def write_filled_disk_error(e: OSError, out: Path, need: int, what: str) -> TinytitanError:
    """The one line for a disk that filled during a write (another process took the space)."""
    return TinytitanError(
        f"the disk of {out} filled up while writing {what} ({e.strerror}); it needs {need / 2**20:.1f} MiB, "
        f"{free_bytes(out) / 2**20:.1f} MiB are free now; nothing was replaced: free space and run again"
    )


def _owner_alive(host: str, pid: int) -> bool:
    """Whether the process that made a temp folder may still run (unknown on another host: yes)."""
    if host != socket.gethostname().replace("-", "_"):
        return True
    try:
        os.kill(pid, 0)  # PermissionError: alive, someone else's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_temp_dirs(out: Path, log=print) -> list[Path]:
    """Removes the temp folders a killed earlier run left beside ``out`` (an export of Tiny leaves ~6 GB)."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for path in out.parent.glob(f".{out.name}.tmp-*"):
        match = re.fullmatch(rf"\.{re.escape(out.name)}\.tmp-(.+)-(\d+)-[^-]+", path.name)
        if match and path.is_dir() and not _owner_alive(match.group(1), int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True)
            log(f"removed {path}: the temporary folder of an interrupted earlier run (process {match.group(2)})")
            removed.append(path)
    return removed


def make_temp_dir(out: Path, log=print) -> Path:
    """An empty folder next to ``out`` (same file system, so the final rename is atomic), mode as umask says.

    Its name carries this host and process id, so a later run can tell a killed run's leftover
    from a folder another process is still writing, and remove only the former.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(out, log)
    prefix = f".{out.name}.tmp-{socket.gethostname().replace('-', '_')}-{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the output is an ordinary folder
    return tmp


def replace_folder(tmp: Path, out: Path) -> None:
    """Puts ``tmp`` at ``out``; an old ``out`` is moved aside first and removed only after."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            out.rename(old)
        else:
            out.rmdir()
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

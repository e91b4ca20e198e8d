"""Is a run's record (``run.toml``) whole? A cut copy must be refused, never read as defaults.

The launcher writes the record key by key with every table of the job config and, last,
one ``[[run.segments]]`` table per launch whose last key is ``changed``
(``tinytitan.launcher.record``). A copy cut short (a full disk, a partial download, ``head -c``)
still parses as TOML when it ends at a line boundary, and torchtitan's config reader fills
every missing key with its default: a run of seq_len 128 on two sources read back as seq_len
2048 with no data. ``record_problem`` names what is missing instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from tinytitan.run.folder import RunFolder

# (table, key) that every record holds: what export, eval, generate and inspect read from it.
REQUIRED_KEYS = (
    ("job", "dump_folder"),
    ("model", "name"),
    ("model", "flavor"),
    ("training", "seq_len"),
    ("training", "steps"),
    ("training", "mixed_precision_param"),
    ("checkpoint", "folder"),
)
# Keys of every [[run.segments]] table: the first and the last the writer writes.
SEGMENT_KEYS = ("start_step", "changed")


def record_problem(path: str | os.PathLike) -> str | None:
    """None for a whole record, else what is wrong with it, in a few words."""
    from tinytitan.config import read_toml

    try:
        doc = read_toml(path)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    except ValueError as e:  # tomllib.TOMLDecodeError
        return f"it does not parse as TOML ({e})"
    missing = [f"{table}.{key}" for table, key in REQUIRED_KEYS if key not in (doc.get(table) or {})]
    if missing:
        more = f" and {len(missing) - 3} more keys" if len(missing) > 3 else ""
        return f"it lacks {', '.join(missing[:3])}{more}"
    run = doc.get("run")
    segments = run.get("segments") if isinstance(run, dict) else None
    if not isinstance(segments, list) or not segments:
        return "it lacks [[run.segments]] (its end)"
    for i, segment in enumerate(segments):
        absent = [k for k in SEGMENT_KEYS if not isinstance(segment, dict) or k not in segment]
        if absent:
            return f"its [[run.segments]] entry {i} lacks {', '.join(absent)}"
    return None


def copied_from(record: str | os.PathLike, dump_folder: str, where: str | os.PathLike) -> str | None:
    """The other run folder a ``run.toml`` was copied from, when ``where`` (a checkpoint of the run that holds
    the record now) is not that run's: the record names another folder (``job.dump_folder``) that still exists
    and holds the same step folder with another ``.metadata``. A whole run folder copied or moved elsewhere
    (same checkpoints, or the original gone) is not a copied record. None when it is the run's own."""
    here = Path(record).resolve().parent
    there = Path(dump_folder).resolve() if dump_folder else here
    if there == here or not RunFolder.at(there).record.is_file():
        return None
    where = Path(where).resolve()
    if here not in where.parents:
        return None
    theirs = there / where.relative_to(here) / ".metadata"
    ours = where / ".metadata"
    if not (theirs.is_file() and ours.is_file()):
        return None
    return str(there) if theirs.read_bytes() != ours.read_bytes() else None

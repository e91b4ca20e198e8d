"""A finished run, answered before torch is imported.

Rerunning the command of a run that already reached ``training.steps`` only says so
(``run_folder.finished_run``). Reading the config through torchtitan's ConfigManager imports torch,
torchtitan and their compilers, which takes longer than the answer; so the launcher first asks
:func:`finished_early`, which reads the five keys the answer depends on (``job.dump_folder``,
``checkpoint.enable``/``folder``/``load_step``, ``training.steps``) from the TOML file and the
overrides with the standard library, and the step reached from the checkpoint folder.

It answers only when it can vouch for the config as the full reader would take it: every key the file
and the overrides name is a key the finished run's own record (``run.toml``, every key of the config as
the ranks ran it) holds, with that key's type; every override's value is the record's (a path: the same
absolute path), but for the five keys read here; and ``NGPU`` (x ``NNODES``), when set, is the process
count of the run's last launch.
Anything else (no record, a key the record lacks, an override it cannot parse or that changes a setting,
another process count) returns None and the launch goes on as before: the full reader checks everything
and names what is wrong. ``TORCHTITAN_DEFAULTS`` are torchtitan's defaults of the five keys;
tests/launcher/test_finished.py compares this reader with the full one, so they cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tinytitan.errors import TinytitanError

TORCHTITAN_DEFAULTS: dict[str, Any] = {
    "job.dump_folder": "./outputs",
    "checkpoint.enable": False,
    "checkpoint.folder": "checkpoint",
    "checkpoint.load_step": -1,
    "training.steps": 10000,
    "metrics.save_tb_folder": "tb",
}
CONFIG_FILE_KEYS = ("job.config_file", "job.custom_config_module")  # the full reader handles these


def _leaves(doc: dict, prefix: str = "") -> dict[str, Any]:
    """``{"training.steps": 20, "data.sources": [...]}``: every key of a TOML document, arrays of tables whole."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same_kind(value: Any, like: Any) -> bool:
    if isinstance(like, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(like, bool)
    if isinstance(like, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(like))


def _parse(raw: str, like: Any) -> Any:
    """An override's text as the type of the record's value; ValueError where it is not one."""
    if isinstance(like, bool) or isinstance(like, (list, dict)):
        raise ValueError(raw)  # flags take no value here; lists are left to the full reader
    if isinstance(like, int):
        return int(raw)
    if isinstance(like, float):
        return float(raw)
    return raw


def parse_overrides(overrides: Sequence[str], known: Mapping[str, Any], strict: bool = True) -> dict[str, Any] | None:
    """``--section.key VALUE``, ``--section.key=VALUE``, ``--section.flag`` and ``--section.no-flag`` as
    ``{"section.key": value}`` typed like ``known``'s values; None for anything else. Not ``strict``: a key
    ``known`` lacks is passed over (with the value that follows it, if any)."""
    out: dict[str, Any] = {}
    args = list(overrides)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            return None
        name, eq, text = arg[2:].partition("=")
        key = name.replace("-", "_")
        section, _, last = key.rpartition(".")
        if key in CONFIG_FILE_KEYS or not section:
            return None
        negated = f"{section}.{last.removeprefix('no_')}"
        if key not in known and last.startswith("no_") and isinstance(known.get(negated), bool) and not eq:
            out[negated], i = False, i + 1
            continue
        if key not in known:
            if strict:
                return None
            i += 1 if eq or i + 1 >= len(args) or args[i + 1].startswith("--") else 2
            continue
        if isinstance(known[key], bool):
            if eq:
                return None
            out[key], i = True, i + 1
            continue
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                return None
            text, i = args[i + 1], i + 1
        try:
            out[key] = _parse(text, known[key])
        except ValueError:
            return None
        i += 1
    return out


def finished_early(config_file: str | None, overrides: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The finished-run line (``run_folder.finished_line``) when the config's run already reached
    ``training.steps``, read without torch; None when it has not, or when the full reader must decide."""
    from tinytitan.checkpoint.completeness import newest_complete
    from tinytitan.config import find_config, read_toml
    from tinytitan.launcher.run_folder import finished_line
    from tinytitan.run.folder import RunFolder

    ngpu = env.get("NGPU", "")
    if ngpu and not (ngpu.isdigit() and int(ngpu) >= 1):
        return None
    try:
        doc = _leaves(read_toml(find_config(config_file or env.get("CONFIG_FILE"))))
    except (TinytitanError, OSError, ValueError):
        return None
    first = parse_overrides(overrides, TORCHTITAN_DEFAULTS, strict=False)
    if first is None:
        return None
    values = {**TORCHTITAN_DEFAULTS, **doc, **first}
    if not all(_same_kind(values[k], like) for k, like in TORCHTITAN_DEFAULTS.items()):
        return None
    run = RunFolder(Path(values["job.dump_folder"]), checkpoint_dir=values["checkpoint.folder"],
                    tb_dir=values["metrics.save_tb_folder"])  # fmt: skip
    steps, load_step = values["training.steps"], values["checkpoint.load_step"]
    if not values["checkpoint.enable"]:
        return None
    if load_step >= 0:
        step = load_step if run.step(load_step).is_dir() else None
    else:
        newest = newest_complete(run.checkpoints)
        step = newest[0] if newest is not None else None
    if step is None or step < steps or not run.record.is_file():
        return None
    try:  # the finished run's record: every key a config of this tinytitan may set, with its type
        record = _leaves(read_toml(run.record))
    except (OSError, ValueError):
        return None
    skip = (*CONFIG_FILE_KEYS, "run.segments")  # a run.toml given as the config holds its own launches
    if any(k not in record or not _same_kind(v, record[k]) for k, v in doc.items() if k not in skip):
        return None
    checked = parse_overrides(overrides, record)
    if checked is None or any(checked.get(k, v) != v for k, v in first.items()):
        return None
    if any(k not in TORCHTITAN_DEFAULTS and not _same_value(v, record[k]) for k, v in checked.items()):
        return None  # another setting than the run's (not one of the five read above): the full reader checks it
    if ngpu and not _same_processes(ngpu, env.get("NNODES", ""), record.get("run.segments")):
        return None
    return finished_line(step, steps, run.step(step))


def _same_value(value: Any, recorded: Any) -> bool:
    """An override's value is the run's: equal, or the same path (the record keeps paths absolute)."""
    if value == recorded:
        return True
    return isinstance(value, str) and isinstance(recorded, str) and os.path.abspath(value) == recorded


def _same_processes(ngpu: str, nnodes: str, segments: Any) -> bool:
    """NGPU (x NNODES) is the process count of the run's last launch."""
    if not isinstance(segments, list) or not segments or not isinstance(segments[-1], dict):
        return False
    if nnodes and not nnodes.isdigit():
        return False
    return int(ngpu) * int(nnodes or 1) == segments[-1].get("world_size")

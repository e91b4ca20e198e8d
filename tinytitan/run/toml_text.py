"""A job config as TOML text (``to_toml``: the run's record, the card's config block) and two configs compared
key by key (``flatten``, ``differences``: what changed between a run's launches, what a ``--config`` overrides)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any

from tinytitan.errors import TinytitanError

# ---------------------------------------------------------------- writing TOML
# torchtitan reads TOML and the standard library only reads it; this is the small writer the record
# needs: tables, arrays of tables, and inline values (strings, numbers, booleans, lists, tables).

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _string(name)


def _string(text: str) -> str:
    # JSON's escapes are TOML's, except that TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return _string(value)
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        items = [f"{_key(str(k))} = {_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, (list, tuple, set)):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    if isinstance(value, os.PathLike):
        return _string(os.fspath(value))
    raise TinytitanError(f"cannot write a {type(value).__name__} value ({value!r}) to TOML")


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(dataclasses.is_dataclass(v) for v in value)


def _table(lines: list[str], path: str, obj, defaults, array: bool = False) -> None:
    """``obj`` (a dataclass) as the table ``path``; with ``defaults``, only the values that differ from them."""
    scalars, tables = [], []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = getattr(defaults, f.name, None) if defaults is not None else None
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            tables.append((f.name, value, default))
        elif _is_table_list(value):
            if defaults is None or _plain(value) != _plain(default):
                tables.append((f.name, value, None))
        elif value is not None and (defaults is None or _plain(value) != _plain(default)):
            scalars.append(f"{_key(f.name)} = {_value(value)}")
    if scalars or array or (defaults is None and path):
        lines += ["", f"[[{path}]]" if array else f"[{path}]", *scalars]
    for name, value, default in tables:
        sub = f"{path}.{_key(name)}" if path else _key(name)
        if isinstance(value, list):
            for item in value:
                _table(lines, sub, item, None, array=True)
        else:
            _table(lines, sub, value, default)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_toml(config, *, only_changed: bool = False, skip: tuple[str, ...] = (), header: str = "") -> str:
    """A job config (nested dataclasses) as TOML that ``load_job_config`` reads back to the same values.

    ``None`` values are left out (TOML has no null; every such key defaults to None). With
    ``only_changed``, only the keys whose value differs from the config class's defaults.
    """
    defaults = type(config)() if only_changed else None
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for f in dataclasses.fields(config):
        if f.name in skip:
            continue
        value = getattr(config, f.name)
        default = getattr(defaults, f.name) if defaults is not None else None
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _table(lines, _key(f.name), value, default)
        elif value is not None and (defaults is None or _plain(value) != _plain(default)):
            lines.append(f"{_key(f.name)} = {_value(value)}")
    return "\n".join(lines).strip("\n") + "\n"


# ---------------------------------------------------------------- comparing configs


def flatten(config, prefix: str = "") -> dict[str, Any]:
    """``{"training.seq_len": 256, "data.sources": [...], ...}``: every key of a config, lists of tables whole."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(flatten(value, key + "."))
        else:
            out[key] = _plain(value)
    return out


def differences(old, new, skip: tuple[str, ...] = ("run.", "job.config_file", "job.dump_folder")) -> list[str]:
    """``key: old -> new`` for every key whose value differs (``skip``: prefixes left out)."""
    a, b = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key.startswith(skip) or a.get(key) == b.get(key):
            continue
        lines.append(f"{key}: {short(a.get(key))} -> {short(b.get(key))}")
    return lines


def short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."

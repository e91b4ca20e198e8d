"""The type of every config value, checked as a job config is read (``tinytitan.config``): each
``--section.key VALUE`` override against its field's declared type before torchtitan's parser sees it
(``first_bad_override``: one line naming the first wrong one and its right form), and every value of
the parsed config, TOML or override, against its field (``check_value_types``). tyro only warns about a
value of the wrong type and passes it on; ``lr = "3e-3"`` then reached every rank and crashed there.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Sequence

from tinytitan.errors import TinytitanError

CONFIG_MODULE = "tinytitan.job_config"  # torchtitan's custom_config_module: tinytitan's sections


_INDEXED = re.compile(r"^(.+)\.(\d+)\.([^.]+)$")  # data.sources.0.weight


def override_keys(custom_module: str | None = CONFIG_MODULE) -> dict[str, typing.Any]:
    """Every ``section.key`` a ``--section.key`` override may name, with its declared type: torchtitan's
    JobConfig and the sections of ``custom_module`` (imported by name, as torchtitan's ConfigManager does)."""
    import importlib

    from torchtitan.config import JobConfig as TitanJobConfig

    keys: dict[str, typing.Any] = {}

    def collect(cls, prefix: str) -> None:
        hints = type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints.get(f.name, f.type)
            if dataclasses.is_dataclass(tp):
                collect(tp, f"{prefix}{f.name}.")
            else:
                keys[f"{prefix}{f.name}"] = tp

    collect(TitanJobConfig, "")
    if custom_module:
        try:
            custom = importlib.import_module(custom_module).JobConfig
        except (ImportError, AttributeError):
            return keys
        collect(custom, "")  # its fields win, as in torchtitan's merge
    return keys


def _item_type(tp):
    """The dataclass of a ``list[SomeDataclass]`` key (``data.sources``), else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _is_bool(tp) -> bool:
    return tp is bool


def _value_problem(value: str, tp) -> str | None:
    """Why ``value`` cannot be read as ``tp`` (None when it can, or when this check does not know ``tp``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        problems = [_value_problem(value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        return None if value in [str(a) for a in args] else _type_name(tp)
    if tp is int:
        try:
            int(value)
        except ValueError:
            return _type_name(tp)
    if tp is float:
        try:
            float(value)
        except ValueError:
            return _type_name(tp)
    return None


def _example(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _example(next((a for a in args if a is not type(None)), str))
    if origin is typing.Literal:
        return str(args[0])
    return {int: "10", float: "0.5"}.get(tp, "VALUE")


def first_bad_override(args: Sequence[str], keys: dict[str, typing.Any], tables: dict[str, int]) -> str | None:
    """One line naming the first wrong override in ``args`` and its right form, or None if none is found;
    ``keys``: every override key and its type (``override_keys``), ``tables``: the config's arrays of tables
    and their lengths."""
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            return f"unexpected {arg!r} among the overrides: each override is --section.key VALUE"
        flag, has_value, inline = arg[2:].partition("=")
        key = flag.replace("-", "_")
        section, _, name = key.rpartition(".")
        tp, found = keys.get(key), key in keys
        negated = not found and name.startswith("no_") and keys.get(f"{section}.{name[3:]}") is bool
        if negated:
            tp, found = bool, True
        indexed = _INDEXED.match(key)
        if not found and indexed:
            table, index, field_name = indexed.group(1), int(indexed.group(2)), indexed.group(3)
            item = _item_type(keys.get(table))
            if item is not None:
                count = tables.get(table)
                if count is not None and index >= count:
                    return (f"--{flag}: the config has {count} [[{table}]] table(s), numbered from 0: "
                            f"use --{table}.0.{field_name} to --{table}.{count - 1}.{field_name}")  # fmt: skip
                item_hints = type_hints(item)
                if field_name in item_hints:
                    tp, found = item_hints[field_name], True
                else:
                    fields = [f.name for f in dataclasses.fields(item)]
                    near = difflib.get_close_matches(field_name, fields, n=1)
                    hint = f"did you mean --{table}.{index}.{near[0]}?" if near else f"its keys: {', '.join(fields)}"
                    return f"unknown override --{flag}: {hint}"
        if not found:
            near = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
            hint = f"did you mean --{near[0]}?" if near else "see `tinytitan train --help` for the keys"
            return f"unknown override --{flag}: {hint}"
        nxt = args[i + 1] if i + 1 < len(args) else None
        if _is_bool(tp):
            value = inline if has_value else (nxt if nxt is not None and not nxt.startswith("--") else None)
            if value is not None:
                base = flag.split(".")[-1][3:] if negated else flag.split(".")[-1]
                on_flag = f"--{section}.{base}" if section else f"--{base}"
                off_flag = f"--{section}.no-{base}" if section else f"--no-{base}"
                off = negated or value.strip().lower() in ("false", "0", "no", "off")
                right, other = (off_flag, on_flag) if off else (on_flag, off_flag)
                return (f"--{flag} is a switch and takes no value: write {right} alone to turn it "
                        f"{'off' if off else 'on'} ({other} turns it {'on' if off else 'off'})")  # fmt: skip
            i += 1
            continue
        if has_value:
            value, i = inline, i + 1
        elif nxt is None or (nxt.startswith("--") and len(nxt) > 2):
            return f"--{flag} needs a value ({_type_name(tp)}), e.g. --{flag} {_example(tp)}"
        else:
            value, i = nxt, i + 2
        problem = _value_problem(value, tp)
        if problem is not None:
            return f"--{flag} {value!r}: it must be {problem}, e.g. --{flag} {_example(tp)}"
    return None


# `lr = "3e-3"` reached every rank and crashed there. Each value is checked against its field's
# declared type, for torchtitan's sections and tinytitan's alike, in one walk.


def type_hints(cls) -> dict[str, typing.Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a merged class may not resolve; use what is already a type
        return {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}


def _type_matches(value, tp) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any or isinstance(tp, (str, typing.TypeVar)):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, set) or tp in (list, tuple, set):
        if not isinstance(value, (list, tuple, set)):
            return False
        inner = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else None
        return inner is None or all(_type_matches(v, inner) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_type_matches(k, args[0]) and _type_matches(v, args[1]) for k, v in value.items())
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return True  # a type this check does not know (torch.dtype, callables): the consumer checks it


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " (or left unset)" if type(None) in args else ""
        )
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string (in quotes)"}
    if tp in names:
        return names[tp]
    if origin in (list, tuple, set) or tp in (list, tuple, set):
        return f"a list of {_type_name(args[0])}s" if args else "a list"
    if origin is dict or tp is dict:
        return "a table"
    return getattr(tp, "__name__", str(tp))


_TABLE_NAMES = {"data.sources": "data source", "data.stages": "data stage"}  # in messages


def check_value_types(config, path: str = "", label: str = "") -> None:
    """Raises one line naming the first value whose type differs from its key's declared type.

    ``path`` is the dotted override name (``data.sources.1``), ``label`` how the table is named in
    the message (``[training]``, ``data source 'starcoderdata':``).
    """
    hints = type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        where = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_value_types(value, where, f"[{where}]")
            continue
        if isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                name = getattr(item, "name", "")
                kind = _TABLE_NAMES.get(where, f"[[{where}]]")
                item_label = f"{kind} {name!r}:" if name else f"{kind} #{i}:"
                check_value_types(item, f"{where}.{i}", item_label)
            continue
        tp = hints.get(f.name, typing.Any)
        shown = f"{label} {f.name}" if label else f.name
        if not _type_matches(value, tp):
            got = "" if typing.get_origin(tp) is typing.Literal else f" is {_describe(value)}, but it"
            raise TinytitanError(
                f"{shown} = {value!r}{got} must be {_type_name(tp)}: fix it in the config file or the --{where} override"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise TinytitanError(
                f"{shown} = {value!r} is not a finite number: fix it in the config file or the --{where} override"
            )


def _describe(value) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table", type(None): "unset"}  # fmt: skip
    return kinds.get(type(value), f"a {type(value).__name__}")

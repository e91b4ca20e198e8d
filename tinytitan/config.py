"""The one way a TOML job config is read: torchtitan's ConfigManager with tinytitan's sections.

Every command that takes ``--config`` (train, data, export, eval, generate), and bench
for a flavor's shipped config, calls :func:`load_job_config` and gets torchtitan's ``JobConfig`` with the
``[data]`` (and other tinytitan) sections merged in, exactly as each training
rank sees it. No other module parses TOML.

Input paths (the tokenizer folder, data sources) resolve as torchtitan does,
against the current directory, and else against the folder that holds the
package (a checkout, or site-packages): the embedded tokenizer and sample
(``tinytitan/assets/...``) work from any folder, installed or not.

The shipped configs are package data (``tinytitan/train_configs/``; the
checkout's ``train_configs/`` is a link to it). ``--config`` takes a file, or a
shipped config's name: ``tiny`` (its flavor), ``llama3_tiny`` or
``train_configs/llama3_tiny.toml`` from any folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import math
import os
import re
import sys
import types
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path

from tinytitan.errors import TinytitanError

CONFIG_MODULE = "tinytitan.job_config"
PACKAGE_DIR = Path(__file__).resolve().parent
# The folder that holds the package: the checkout, or site-packages when installed from a wheel.
SOURCE_ROOT = PACKAGE_DIR.parent
CONFIG_DIR = PACKAGE_DIR / "train_configs"  # the shipped configs, package data
CONFIG_PREFIX = "llama3_"  # shipped config llama3_<flavor>.toml
DEFAULT_CONFIG = "train_configs/llama3_debug.toml"


def resolve_path(raw: str | os.PathLike) -> Path:
    """An input path of a config: as torchtitan reads it (relative to the working directory), else
    relative to the folder that holds the package (``tinytitan/assets/...``), else to the package
    itself (``train_configs/...``, which an installed package holds inside)."""
    path = Path(raw)
    if path.is_absolute() or path.exists():
        return path
    for root in (SOURCE_ROOT, PACKAGE_DIR):
        if (root / path).exists():
            return root / path
    return path


def shipped_configs() -> dict[str, Path]:
    """name -> file of every shipped config; the name is the flavor (``tiny`` for llama3_tiny.toml)."""
    return {p.stem.removeprefix(CONFIG_PREFIX): p for p in sorted(CONFIG_DIR.glob("*.toml"))}


def _shipped(raw: str) -> Path | None:
    """A shipped config named by its flavor (``tiny``), its stem (``llama3_tiny``) or file name."""
    if os.sep in raw or "/" in raw:
        return None
    name = raw.removesuffix(".toml").removeprefix(CONFIG_PREFIX)
    return shipped_configs().get(name)


def find_config(config_file: str | os.PathLike | None) -> Path:
    """The config file to read: the given one, else ``$CONFIG_FILE``, else the embedded default.

    A path is read as torchtitan would (then as :func:`resolve_path`); a bare name is a shipped config.
    """
    raw = str(config_file or os.environ.get("CONFIG_FILE") or DEFAULT_CONFIG)
    path = resolve_path(raw)
    if path.is_file():
        return path
    names = ", ".join(shipped_configs()) or "none shipped"
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.toml"))
        files = f"one of its TOML files ({', '.join(inside)}) or " if inside else "a TOML file or "
        raise TinytitanError(f"config {raw} is a folder: pass {files}a shipped config name ({names})")
    shipped = _shipped(raw)
    if shipped is not None:
        return shipped
    raise TinytitanError(
        f"config file {raw} does not exist: pass an existing TOML file (CONFIG_FILE or --config) "
        f"or a shipped config name ({names})"
    )


def _has_arg(args: Sequence[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in args for n in names)


def training_args(config_file: str | os.PathLike, overrides: Sequence[str] = ()) -> list[str]:
    """The arguments torchtitan's ConfigManager receives (also what torchrun passes to each rank)."""
    args = ["--job.config_file", str(config_file), *overrides]
    if not _has_arg(overrides, "--job.custom_config_module", "--job.custom-config-module"):
        args += ["--job.custom_config_module", CONFIG_MODULE]
    return args


def parse_args(args: Sequence[str]):
    """torchtitan's own parsing; a bad file or a bad override becomes one line naming it."""
    from torchtitan.config import ConfigManager
    from torchtitan.tools.logging import logger

    level = logger.level
    logger.setLevel("CRITICAL")  # ConfigManager logs a traceback before re-raising a bad file
    said = io.StringIO()  # tyro's box for a bad override (rich writes it to stdout or stderr)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            # tyro warns about a TOML value of the wrong type, then passes it on; check_value_types names it.
            warnings.filterwarnings("ignore", module="tyro")
            job_config = ConfigManager().parse_args(list(args))
        sys.stderr.write(said.getvalue())  # anything else said while parsing a good config is shown
        return job_config
    except FileNotFoundError as e:
        raise TinytitanError(f"config file {e.filename} does not exist: pass an existing TOML file") from None
    except UnicodeDecodeError as e:  # tomllib reads UTF-8 only
        line = e.object[: e.start].count(b"\n") + 1
        raise TinytitanError(
            f"config file {_config_path(args)} is not UTF-8 text (byte {e.object[e.start]:#04x} on line {line}): "
            "save it as UTF-8 (TOML files must be UTF-8)"
        ) from None
    except ValueError as e:  # tomllib.TOMLDecodeError is a ValueError too
        first = str(e).splitlines()[0]
        if type(e).__name__ == "TOMLDecodeError":
            raise TinytitanError(f"config file {_config_path(args)} is not valid TOML: {first}") from None
        raise TinytitanError(f"{first} Fix the TOML key or the --section.key override.") from None
    except SystemExit as e:  # tyro rejects a malformed override by exiting (and exits 0 after --help)
        if not e.code:
            print(said.getvalue(), end="")
            raise
        raise TinytitanError(bad_override(args) or _tyro_words(said.getvalue())) from None
    finally:
        logger.setLevel(level)


def _arg_value(args: Sequence[str], *names: str) -> str | None:
    """The value given to the first of ``names`` in ``args`` (``--name value`` or ``--name=value``)."""
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(tuple(f"{n}=" for n in names)):
            return arg.split("=", 1)[1]
    return None


def _config_path(args: Sequence[str]) -> str:
    return _arg_value(args, "--job.config_file", "--job.config-file") or "?"


def _tyro_words(box: str) -> str:
    """The first message of tyro's box, unboxed (when ``bad_override`` finds nothing to name)."""
    lines = []
    for line in box.splitlines():
        text = line.strip().strip("│╭╮╰╯").strip()
        if text.startswith("─") or text.startswith("For full helptext"):
            if lines:
                break
            continue
        if text and not set(text) <= set("─╭╮╰╯"):
            lines.append(text)
    said = " ".join(lines) or "tyro rejected the arguments"
    return f"bad override: {said}; each override is --section.key VALUE (see `tinytitan train --help`)"


# ---------------------------------------------------------------- overrides
# tyro's own answer to a wrong override is a boxed help text of 6-17 lines; these name the one
# override that is wrong and the right form instead.

_INDEXED = re.compile(r"^(.+)\.(\d+)\.([^.]+)$")  # data.sources.0.weight


def override_keys(custom_module: str | None = CONFIG_MODULE) -> dict[str, typing.Any]:
    """Every ``section.key`` a ``--section.key`` override may name, with its declared type: torchtitan's
    JobConfig and the sections of ``custom_module`` (imported by name, as torchtitan's ConfigManager does)."""
    import importlib

    from torchtitan.config import JobConfig as TitanJobConfig

    keys: dict[str, typing.Any] = {}

    def collect(cls, prefix: str) -> None:
        hints = _hints(cls)
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


def bad_override(args: Sequence[str]) -> str | None:
    """One line naming the first wrong override in ``args`` and its right form, or None if none is found."""
    keys = override_keys(_arg_value(args, "--job.custom_config_module", "--job.custom-config-module"))
    tables = _toml_tables(_config_path(args))
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
                item_hints = _hints(item)
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


def _toml_tables(config_file: str) -> dict[str, int]:
    """How many tables each array of tables (``[[data.sources]]``) of the config file has."""
    import tomllib

    try:
        with open(config_file, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, ValueError):
        return {}
    counts: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                counts[f"{prefix}{k}"] = len(v)

    walk(doc, "")
    return counts


def resolve_job_paths(job_config) -> None:
    """Points package-relative paths (the embedded tokenizer and sample) at the installed package."""
    if job_config.model.hf_assets_path:
        job_config.model.hf_assets_path = str(resolve_path(job_config.model.hf_assets_path))
    for source in job_config.data.sources:
        if source.path and "://" not in source.path:
            source.path = str(resolve_path(source.path))


def rank_overrides(job_config, overrides: Sequence[str] = ()) -> list[str]:
    """The overrides the ranks get: the user's, then the tokenizer folder as resolved here. torchtitan
    checks that folder against the working directory before tinytitan resolves it, and warns
    "does not exist!" about the embedded tokenizer when training runs outside the checkout."""
    if not job_config.model.hf_assets_path:
        return list(overrides)
    return [*overrides, "--model.hf_assets_path", job_config.model.hf_assets_path]


def load_job_config(config_file: str | os.PathLike | None, overrides: Sequence[str] = ()):
    """The JobConfig of a TOML file plus ``--section.key value`` overrides, with package paths resolved
    and every value of the type its key declares."""
    path = find_config(config_file)
    job_config = parse_args(training_args(path, overrides))
    job_config.job.config_file = str(path)
    check_value_types(job_config)
    resolve_job_paths(job_config)
    return job_config


# ---------------------------------------------------------------- value types
# torchtitan's ConfigManager passes TOML values into its dataclasses unchecked: `steps = "2"` or
# `lr = "3e-3"` reached every rank and crashed there. Each value is checked against its field's
# declared type, for torchtitan's sections and tinytitan's alike, in one walk.


def _hints(cls) -> dict[str, typing.Any]:
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
    hints = _hints(type(config))
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

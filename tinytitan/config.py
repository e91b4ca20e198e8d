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

import dataclasses
import math
import os
import types
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path

from tinytitan.errors import TinytitanError

CONFIG_MODULE = "tinytitan.job_config"
METRICS_FILE = "metrics.jsonl"  # in the run folder: one JSON row per logged step (rank 0)
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
    """torchtitan's own parsing; a bad file or an unknown key becomes one line naming it."""
    from torchtitan.config import ConfigManager
    from torchtitan.tools.logging import logger

    level = logger.level
    logger.setLevel("CRITICAL")  # ConfigManager logs a traceback before re-raising a bad file
    try:
        with warnings.catch_warnings():
            # tyro warns about a TOML value of the wrong type, then passes it on; check_value_types names it.
            warnings.filterwarnings("ignore", module="tyro")
            return ConfigManager().parse_args(list(args))
    except FileNotFoundError as e:
        raise TinytitanError(f"config file {e.filename} does not exist: pass an existing TOML file") from None
    except ValueError as e:  # tomllib.TOMLDecodeError is a ValueError too
        first = str(e).splitlines()[0]
        if type(e).__name__ == "TOMLDecodeError":
            raise TinytitanError(f"config file is not valid TOML: {first}") from None
        raise TinytitanError(f"{first} Fix the TOML key or the --section.key override.") from None
    except SystemExit as e:  # tyro rejects a malformed override by exiting
        raise TinytitanError(f"bad override in {' '.join(args[2:])!s}: see `tinytitan train --help`") from e
    finally:
        logger.setLevel(level)


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

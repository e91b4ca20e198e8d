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
import io
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from tinytitan.config_types import CONFIG_MODULE, check_value_types, first_bad_override, override_keys
from tinytitan.errors import TinytitanError

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


def bad_override(args: Sequence[str]) -> str | None:
    """One line naming the first wrong override in ``args`` and its right form, or None if none is found."""
    keys = override_keys(_arg_value(args, "--job.custom_config_module", "--job.custom-config-module"))
    tables = _toml_tables(_config_path(args))
    return first_bad_override(args, keys, tables)


def read_toml(path: str | os.PathLike) -> dict:
    """A TOML file as written, no defaults filled in (OSError, UnicodeDecodeError and ValueError propagate)."""
    import tomllib

    with open(path, "rb") as f:
        return tomllib.load(f)


def _toml_tables(config_file: str) -> dict[str, int]:
    """How many tables each array of tables (``[[data.sources]]``) of the config file has."""
    try:
        doc = read_toml(config_file)
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

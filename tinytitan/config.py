"""The one way a TOML job config is read: torchtitan's ConfigManager with tinytitan's sections.

Every command that takes ``--config`` (train, data, export, eval, generate, bench)
calls :func:`load_job_config` and gets torchtitan's ``JobConfig`` with the
``[data]`` (and other tinytitan) sections merged in, exactly as each training
rank sees it. No other module parses TOML.

Input paths (the tokenizer folder, data sources) resolve as torchtitan does,
against the current directory, and else against the checkout that holds the
package: the embedded tokenizer and sample (``tinytitan/assets/...``) and the
shipped configs work from any folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tinytitan.errors import TinytitanError

CONFIG_MODULE = "tinytitan.job_config"
METRICS_FILE = "metrics.jsonl"  # in the run folder: one JSON row per logged step (rank 0)
PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout (or source tree) that holds train_configs/ next to the package, when there is one.
SOURCE_ROOT = PACKAGE_DIR.parent
DEFAULT_CONFIG = "train_configs/llama3_debug.toml"


def resolve_path(raw: str | os.PathLike) -> Path:
    """An input path of a config: as torchtitan reads it (relative to the working directory),
    else relative to the checkout that holds the package (the embedded assets, train_configs/)."""
    path = Path(raw)
    if path.is_absolute() or path.exists() or not (SOURCE_ROOT / path).exists():
        return path
    return SOURCE_ROOT / path


def find_config(config_file: str | os.PathLike | None) -> Path:
    """The config file to read: the given one, else ``$CONFIG_FILE``, else the embedded default."""
    raw = config_file or os.environ.get("CONFIG_FILE") or DEFAULT_CONFIG
    path = resolve_path(raw)
    if path.is_file():
        return path
    shipped = sorted(str(p) for p in Path("train_configs").glob("*.toml")) or [DEFAULT_CONFIG]
    raise TinytitanError(f"config file {raw} does not exist: use one of (CONFIG_FILE or --config) {', '.join(shipped)}")


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


def load_job_config(config_file: str | os.PathLike | None, overrides: Sequence[str] = ()):
    """The JobConfig of a TOML file plus ``--section.key value`` overrides, with package paths resolved."""
    path = find_config(config_file)
    job_config = parse_args(training_args(path, overrides))
    job_config.job.config_file = str(path)
    resolve_job_paths(job_config)
    return job_config

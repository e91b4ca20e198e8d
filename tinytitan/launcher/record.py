"""Writes the run's record, ``<dump_folder>/run.toml``, before torchrun starts (``tinytitan.run.record``).

The config written is the one every rank reads (the TOML file plus the overrides, through
``tinytitan.config.load_job_config``), with its input paths and dump folder made absolute. A run
that already has a record (a resume) keeps its launches and appends one: the step it starts from,
its command, versions, and the keys that changed. On several nodes only node 0 writes it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from tinytitan.config import SOURCE_ROOT
from tinytitan.run.folder import RUN_FILE, RunFolder
from tinytitan.run.record import Segment, absolute_paths, read_record
from tinytitan.run.toml_text import differences, to_toml

# The launcher's environment variables (tinytitan.launcher.launch), shown in front of the command.
LAUNCH_ENV = ("NGPU", "CONFIG_FILE", "LOG_RANK", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "MAX_RESTARTS")
HEADER = """\
tinytitan run record, written by the launcher when the run started (tinytitan.run.record).
The job config the ranks ran with: the config file plus the overrides, input paths made absolute,
what a CPU run changes (foreach, float32) applied; torchtitan's dataset keys left out (tinytitan's [data] replaces them).
[[run.segments]]: one table per launch (the step it started from, command, versions, what changed).
Read by `tinytitan export`, `eval`, `generate` and `checkpoint inspect`.
`tinytitan train --config <this file>` runs the same job again."""


def command_line(program: Sequence[str], args: Sequence[str], env: Mapping[str, str]) -> str:
    """The command as it can be run again: the launcher's environment variables, the program, its arguments."""
    prefix = [f"{name}={env[name]}" for name in LAUNCH_ENV if env.get(name)]
    return " ".join([*(shlex.quote(p) for p in prefix), shlex.join([*program, *args])])


def script_program() -> list[str]:
    """How ``python -m tinytitan.launcher.launch`` was started: by ./run_llama_train.sh from the checkout."""
    script = SOURCE_ROOT / "run_llama_train.sh"
    if script.is_file() and Path.cwd().resolve() == SOURCE_ROOT.resolve():
        return ["./run_llama_train.sh"]
    return ["python", "-m", "tinytitan.launcher.launch"]


def git_commit(root: Path = SOURCE_ROOT) -> str:
    """The checkout's commit, '+dirty' with uncommitted changes to tracked files; '' outside a git checkout."""
    if not (root / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


def resumes_from(job_config) -> int:
    """The step a launch starts from (0: a fresh start): ``run_folder.resume_step``, as the trainer picks it."""
    from tinytitan.launcher.run_folder import resume_step

    return resume_step(job_config) or 0


def data_identity(job_config, files: dict[str, list[str]] | None = None) -> tuple[str, str]:
    """(tokenizer hash, data plan fingerprint) of a tinytitan job; empty for another TrainSpec's.
    ``files``: the text sources' files as the launcher's data check listed them (else listed here)."""
    from tinytitan.models import SPEC_NAME

    if job_config.model.name != SPEC_NAME or not job_config.model.hf_assets_path:
        return "", ""
    from tinytitan.data.encode import Encoder
    from tinytitan.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(job_config.model.hf_assets_path)
    tokenizer_hash = Encoder(tokenizer).fingerprint()
    if not job_config.data.sources:
        return tokenizer_hash, ""
    from tinytitan.data.planner import make_plan

    plan = make_plan(job_config.data, tokenizer, files or None).fingerprint()  # the launcher's one plan
    return tokenizer_hash, hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def precision(job_config, gpus: int) -> str:
    if not gpus or job_config.training.mixed_precision_param == "float32":
        return "float32"
    return f"{job_config.training.mixed_precision_param} mixed precision (float32 weights)"


def device_name(gpus: int) -> str:
    if not gpus:
        return "cpu"
    import torch

    return torch.cuda.get_device_name(0)


def write_run_record(
    job_config,
    *,
    world_size: int,
    gpus: int,
    command: str,
    env: Mapping[str, str],
    start_step: int | None = None,
    files: dict[str, list[str]] | None = None,
) -> Path | None:
    """Writes (or extends) ``<dump_folder>/run.toml``; returns its path (None on nodes other than node 0).
    ``start_step``: the step this launch resumes from (default: ``resumes_from``)."""
    if (env.get("NODE_RANK") or "0") != "0":
        return None
    import torch

    import tinytitan

    config = absolute_paths(copy.deepcopy(job_config))
    if not gpus:  # what the CPU ranks run with (tinytitan.rank.device): foreach, float32, no compile
        from tinytitan.rank.device import cpu_changes

        cpu_changes(config)
    run = RunFolder.of(config)
    dump, path = run.root, run.record
    previous = _previous_record(path)
    tokenizer_hash, fingerprint = data_identity(config, files)
    segment = Segment(
        start_step=resumes_from(config) if start_step is None else start_step,
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=command,
        config_file=str(Path(job_config.job.config_file).resolve()),
        world_size=world_size,
        device=device_name(gpus),
        precision=precision(config, gpus),
        tinytitan_version=tinytitan.__version__,
        torchtitan_version=_version("torchtitan"),
        torch_version=torch.__version__,
        git_commit=git_commit(),
        tokenizer_hash=tokenizer_hash,
        data_fingerprint=fingerprint,
        changed=differences(previous, config) if previous is not None else [],
    )
    config.run.segments = [*(previous.run.segments if previous is not None else []), segment]
    leave_out_unused(config)
    dump.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RUN_FILE}.tmp")
    text = to_toml(config, header=HEADER)
    tmp.write_text(text)
    os.replace(tmp, path)
    run.state.mkdir(parents=True, exist_ok=True)
    run.record_digest.write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
    return path


def leave_out_unused(config) -> None:
    """torchtitan's dataset keys, which tinytitan's ``[data]`` replaces, are not written (``None`` is left out)."""
    from tinytitan.models import SPEC_NAME

    if config.model.name == SPEC_NAME:
        for section in (config.training, config.validation):
            section.dataset, section.dataset_path = None, None


def _previous_record(path: Path):
    if not path.is_file():
        return None
    from tinytitan.errors import TinytitanError

    try:
        return read_record(path)
    except TinytitanError as e:
        kept = path.with_name(f"{RUN_FILE}.unreadable")
        os.replace(path, kept)
        print(f"tinytitan: warning: {e}; kept it as {kept} and started a new record", file=sys.stderr, flush=True)
        return None


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""

"""Starts training: checks the config, writes the run's record (``<dump_folder>/run.toml``, see
``tinytitan.launcher.record``) and the start lines, runs torchrun with ``-m tinytitan.rank.main``, and
sums the run up when it ends (``tinytitan.launcher.report``).

Environment (the interface of torchtitan's run_train.sh): ``NGPU`` (default:
visible GPUs, or 2 processes on a CPU-only machine), ``CONFIG_FILE`` (default:
the debug config), ``LOG_RANK`` (default 0), and for several nodes ``NNODES``,
``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` (c10d rendezvous). Arguments
after the config pass through to torchtitan as overrides.

``MAX_RESTARTS`` (or ``--max-restarts``): how often torchrun restarts every rank
after one fails; each restart resumes from the newest complete checkpoint. Default
3 with GPUs: Xid errors, a one-off out-of-memory or a lost node usually clear on a
restart, while a bug fails again within minutes, so 3 bounds the waste. Default 0
without a GPU (development: fail fast). tinytitan.launcher.supervise handles the signals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence

from tinytitan.config import DEFAULT_CONFIG, load_job_config, rank_overrides, training_args
from tinytitan.errors import TinytitanError, run_guarded
from tinytitan.launcher.finished import finished_early
from tinytitan.launcher.hangs import Watch
from tinytitan.launcher.preflight import preflight
from tinytitan.launcher.resume_check import KeptFiles, check_resume, skipped_checkpoints, write_data_listing
from tinytitan.launcher.run_folder import RunLock, finished_run, takes_lock
from tinytitan.launcher.supervise import Supervisor
from tinytitan.run.folder import RunFolder

CPU_PROCESSES = 2  # FSDP needs at least two ranks to shard anything
GPU_MAX_RESTARTS = 3
REFUSED_EXIT_CODE = 2  # every rank refused the job with the same one line (Supervisor._outcome)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_nproc(env: Mapping[str, str], gpus: int) -> int:
    """Processes per node from NGPU, checked against the GPUs this node has."""
    raw = env.get("NGPU", "")
    if not raw:
        return gpus or CPU_PROCESSES
    try:
        nproc = int(raw)
    except ValueError:
        raise TinytitanError(f"NGPU={raw!r} is not a number: set NGPU to the processes per node, e.g. NGPU=8") from None
    if nproc < 1:
        raise TinytitanError(f"NGPU={nproc} must be at least 1")
    if gpus and nproc > gpus:
        raise TinytitanError(f"NGPU={nproc} but this node has {gpus} visible GPU(s): set NGPU<={gpus}")
    cores = os.cpu_count() or 1
    if not gpus and nproc > max(cores, CPU_PROCESSES):
        # Refused rather than capped: a silently different world size changes the run's batch and data order.
        raise TinytitanError(
            f"NGPU={nproc} but there is no GPU and this machine has {cores} CPU cores: set NGPU<={max(cores, 2)} "
            "(each CPU process needs a core; more would only crawl)"
        )
    return nproc


def env_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A numeric launcher variable, checked before torchrun sees it."""
    raw = env.get(name, "") or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise TinytitanError(f"{name}={raw!r} is not a number: set it to an integer in [{low}, {high}]") from None
    if not low <= value <= high:
        raise TinytitanError(f"{name}={value} is out of range: set it to an integer in [{low}, {high}]")
    return value


def check_launch_env(env: Mapping[str, str], nproc: int) -> None:
    """NNODES, NODE_RANK, MASTER_PORT and LOG_RANK as torchrun needs them (it accepted 0 and 'abc')."""
    nnodes = env_int(env, "NNODES", 1, 1, 100_000)
    if env.get("NODE_RANK"):
        env_int(env, "NODE_RANK", 0, 0, nnodes - 1)
    env_int(env, "MASTER_PORT", 29500, 1, 65535)
    env_int(env, "MAX_RESTARTS", 0, 0, 1000)
    for part in (env.get("LOG_RANK") or "0").split(","):
        if not part.strip().isdigit() or int(part) >= nproc:
            raise TinytitanError(
                f"LOG_RANK={env.get('LOG_RANK')!r}: list local ranks below NGPU={nproc}, comma-separated, e.g. LOG_RANK=0,1"
            )


def max_restarts(env: Mapping[str, str], gpus: int) -> int:
    return env_int(env, "MAX_RESTARTS", GPU_MAX_RESTARTS if gpus else 0, 0, 1000)


def torchrun_command(nproc: int, args: Sequence[str], env: Mapping[str, str], restarts: int = 0) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--max-restarts={restarts}"]
    # SIGTERM and SIGUSR1 reach the ranks from the launcher (tinytitan.launcher.supervise), not through torchrun.
    cmd.append("--signals-to-handle=SIGINT,SIGHUP,SIGQUIT")
    nnodes = int(env.get("NNODES", "1"))
    if nnodes > 1:
        if not env.get("MASTER_ADDR"):
            raise TinytitanError(f"NNODES={nnodes} needs MASTER_ADDR: set it to the first node's address")
        endpoint = f"{env['MASTER_ADDR']}:{env.get('MASTER_PORT', '29500')}"
        cmd += [
            f"--nnodes={nnodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={endpoint}",
            f"--rdzv_id={env.get('RDZV_ID', 'tinytitan')}",
        ]
        if env.get("NODE_RANK"):
            cmd.append(f"--node_rank={env['NODE_RANK']}")
    else:
        cmd.append("--standalone")
    log_rank = env.get("LOG_RANK", "0")
    cmd += [f"--local-ranks-filter={log_rank}", "--role=rank", "--tee=3"]
    return cmd + ["-m", "tinytitan.rank.main", *args]


def run_watch(job_config, world_size: int) -> Watch:
    """What the supervisor watches: the run folder's heartbeats and checkpoints (tinytitan.launcher.hangs)."""
    from tinytitan.job_config import stall_seconds
    from tinytitan.rank.heartbeat import flush_interval

    run = RunFolder.of(job_config)
    run = dataclasses.replace(run, root=run.root.resolve())
    stall = stall_seconds(job_config)
    return Watch(
        run=run,
        checkpoints=run.checkpoints if job_config.checkpoint.enable else None,
        world_size=world_size,
        stall_seconds=stall,
        all_stalled_seconds=job_config.comm.train_timeout_seconds,
        quiet_seconds=(stall or job_config.comm.train_timeout_seconds) / 2,
        interval_s=flush_interval(job_config),
    )


def process_env(env: Mapping[str, str], nproc: int, gpus: int) -> dict[str, str]:
    out = dict(env)
    # torchrun's workers otherwise share its rendezvous store, and a restarted rank can read its
    # peer's address from the attempt before (pytorch#135712): "Connection refused" after a restart.
    out.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    if gpus:  # as torchtitan's run_train.sh: less fragmentation with varying batch shapes
        out.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    elif "OMP_NUM_THREADS" not in out:
        out["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return out


def print_stages(job_config, world_size: int) -> None:
    """One line per [[data.stages]] stage: its first and last step, before any process starts."""
    if not job_config.data.stages:
        return
    from tinytitan.data.stages import data_parallel_ranks, describe_spans, run_spans, sequences_per_step

    training = job_config.training
    per_step = sequences_per_step(training, data_parallel_ranks(job_config.parallelism, world_size)) * training.seq_len
    for line in describe_spans(run_spans(job_config, world_size), per_step):
        print(f"tinytitan: {line}", flush=True)


def checked(config_file: str | None, overrides: Sequence[str], env: Mapping[str, str]):
    """Every check a launch runs before anything is written: (job_config, nproc, gpus, world_size, files), ``files``
    the text sources' files as the data check listed them (the run's record reuses them)."""
    gpus = visible_gpus()
    nproc = resolve_nproc(env, gpus)
    check_launch_env(env, nproc)
    job_config = load_job_config(config_file or env.get("CONFIG_FILE"), overrides)
    import torch

    world_size = nproc * int(env.get("NNODES") or 1)
    files = preflight(job_config, world_size, gpus, torch.__version__)
    return job_config, nproc, gpus, world_size, files


def check(config_file: str | None, overrides: Sequence[str], env: Mapping[str, str]) -> int:
    """``tinytitan train --check``: the launch's checks and its plan (``tinytitan.launcher.plan``), nothing run."""
    from tinytitan.launcher.plan import print_plan

    job_config, nproc, gpus, world_size, _ = checked(config_file, overrides, env)
    print_plan(job_config, nproc=nproc, gpus=gpus, world_size=world_size)
    return 0


def launch(
    config_file: str | None,
    overrides: Sequence[str],
    env: Mapping[str, str] | None = None,
    command: str | None = None,
) -> int:
    """``command``: how the user started this launch (the run record keeps it; the start lines show it as
    the resume command)."""
    from tinytitan.launcher import report
    from tinytitan.launcher.record import command_line, resumes_from, script_program, write_run_record

    started = time.monotonic()
    env = dict(os.environ if env is None else env)
    early = finished_early(config_file, overrides, env)  # a finished run's rerun, answered before torch loads
    if early is not None:
        print(early, flush=True)
        return 0
    job_config, nproc, gpus, world_size, files = checked(config_file, overrides, env)
    finished = finished_run(job_config)
    if finished is not None:  # before anything is written to the run folder
        print(finished, flush=True)
        return 0
    start_step = resumes_from(job_config)
    check_resume(job_config, world_size, start_step)  # what a resume may not change, before anything is written
    for line in skipped_checkpoints(job_config, start_step):
        print(f"tinytitan: warning: {line}", file=sys.stderr, flush=True)
    print_stages(job_config, world_size)
    config_file = job_config.job.config_file
    restarts = max_restarts(env, gpus)
    cmd = torchrun_command(nproc, training_args(config_file, rank_overrides(job_config, overrides)), env, restarts)
    with RunLock(RunFolder.of(job_config)) if takes_lock(env) else contextlib.nullcontext():
        command = command or command_line(script_program(), overrides, env)
        run = RunFolder.of(job_config)
        kept = KeptFiles(run.record, run.data_files, run.record_digest)
        record = write_run_record(job_config, world_size=world_size, gpus=gpus, command=command, env=env,
                                  start_step=start_step, files=files)  # fmt: skip
        if record is not None:
            write_data_listing(job_config, start_step)
        where = f"{nproc} GPU(s)" if gpus else f"{nproc} CPU processes (no GPU found)"
        print(f"tinytitan: training {config_file} on {where}, up to {restarts} restart(s)", flush=True)
        start = report.start_lines(job_config, record=record, command=command, start_step=start_step)
        print("\n".join(start), flush=True)
        offset = report.metrics_size(RunFolder.of(job_config))
        watch = run_watch(job_config, world_size)
        code = Supervisor(cmd, process_env(env, nproc, gpus), nproc, restarts, watch).run()
        if code == REFUSED_EXIT_CODE and report.metrics_size(RunFolder.of(job_config)) == offset:
            kept.restore()  # the ranks refused the launch before a step: the record stays as it was
    if code == 0:
        outcome = report.read_outcome(RunFolder.of(job_config), offset)
        outcome.start_step = start_step
        print("\n".join(report.end_lines(job_config, outcome, wall_s=time.monotonic() - started)), flush=True)
    return code


PASS_THROUGH = True  # unknown arguments are torchtitan overrides


def configure(parser) -> None:
    import argparse

    from tinytitan.config import shipped_configs

    parser.add_argument(
        "--config",
        default=None,
        help=f"TOML job config, or a shipped one by name: {', '.join(shipped_configs())} "
        f"(default: $CONFIG_FILE or {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run every start check and print the plan (steps, tokens, stages, readers); start and write nothing",
    )
    parser.add_argument("--ngpu", type=int, default=None, help="processes per node (default: $NGPU or visible GPUs)")
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=None,
        help=f"restarts after a rank fails (default: $MAX_RESTARTS, or {GPU_MAX_RESTARTS} with GPUs, 0 without)",
    )
    parser.epilog = "Other arguments are config overrides, e.g. --training.steps 20 --job.dump_folder /tmp/run1"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    plain = parser.format_help

    def format_help() -> str:  # the keys only when help is asked for (they are read from the source)
        from tinytitan.launcher.keys import keys_help

        return plain() + "\n" + keys_help() + "\n"

    parser.format_help = format_help


def run(args) -> int:
    from tinytitan.launcher.record import command_line

    env = dict(os.environ)
    given = [*(["--config", args.config] if args.config else []),
             *(["--ngpu", str(args.ngpu)] if args.ngpu is not None else []),
             *(["--max-restarts", str(args.max_restarts)] if args.max_restarts is not None else [])]  # fmt: skip
    command = command_line(["tinytitan", "train"], [*given, *args.overrides], env)
    if args.ngpu is not None:
        env["NGPU"] = str(args.ngpu)
    if args.max_restarts is not None:
        env["MAX_RESTARTS"] = str(args.max_restarts)
    if args.check:
        return check(args.config, args.overrides, env)
    return launch(args.config, args.overrides, env, command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tinytitan.launcher.launch [overrides]``: what run_llama_train.sh runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_guarded(lambda: launch(None, argv))


if __name__ == "__main__":
    sys.exit(main())

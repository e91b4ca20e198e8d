"""``tinytitan bench``: one run per flavor and batch, or a sweep of the settings that matter.

Command-line layer over ``tinytitan.bench.run`` (one measured run) and ``tinytitan.bench.sweep``
(the search); also what ``benchmarks/train_throughput.py`` runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tinytitan.bench.run import (
    AC_MODES,
    LOSS_KINDS,
    RESHARD_POLICIES,
    Settings,
    detect_machine,
    emit,
    float8_available,
    make_schedule,
    run_once,
)
from tinytitan.errors import TinytitanError


def configure(parser) -> None:
    parser.add_argument(
        "--flavor", nargs="+", default=None, help="flavors (default: tiny micro nano on GPU, debug on CPU)"
    )
    parser.add_argument("--seq-len", type=int, default=None, help="sequence length (default: 2048 on GPU, 128 on CPU)")
    parser.add_argument("--local-batch-size", type=int, nargs="+", default=None, help="per-GPU batch sizes to try")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile the model and loss"
    )
    parser.add_argument("--ac", choices=AC_MODES, default="none", help="activation checkpointing mode")
    parser.add_argument("--float8", action="store_true", help="float8 linears (torchao, SM89+ GPUs)")
    parser.add_argument("--reshard", choices=RESHARD_POLICIES, default="default", help="FSDP reshard_after_forward")
    parser.add_argument(
        "--loss", choices=LOSS_KINDS, default="chunked", help="[loss] kind: chunked projection + cross-entropy or plain"
    )
    parser.add_argument("--chunk-tokens", type=int, default=None, help="[loss] chunk_tokens (default: the config's)")
    parser.add_argument("--deterministic", action="store_true", help="[debug] deterministic (torchtitan's setting)")
    parser.add_argument("--warmup", type=int, default=None, help="steps not averaged (default: 5 on GPU, 1 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (default: 15 on GPU, 2 on CPU)")
    parser.add_argument("--log-freq", type=int, default=None, help="steps per log row (default: 5 on GPU, 1 on CPU)")
    parser.add_argument("--ngpu", type=int, default=None, help="processes (default: $NGPU, visible GPUs or 2 on CPU)")
    parser.add_argument(
        "--profile", action="store_true", help="profile one extra step; kernel-time summary in the JSON"
    )
    parser.add_argument("--timeout-s", type=float, default=600, help="give up on one run after this long")
    parser.add_argument("--sweep", action="store_true", help="try the settings that matter; print the best per flavor")
    parser.add_argument("--budget-s", type=float, default=480, help="sweep: stop starting runs after this long")
    parser.add_argument("--smoke", action="store_true", help="sweep: a minute-long CPU-sized version, for CI")
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the runs (logs, metrics) here")


def run(args) -> int:
    from tinytitan.bench import sweep

    machine = detect_machine(args.ngpu)
    on_gpu = bool(machine.gpus)
    schedule = make_schedule(
        args.warmup or (5 if on_gpu else 1), args.steps or (15 if on_gpu else 2), args.log_freq or (5 if on_gpu else 1)
    )
    flavors = args.flavor or (["tiny", "micro", "nano"] if on_gpu else ["debug"])
    seq_len = args.seq_len or (2048 if on_gpu else 128)
    if args.float8 and not float8_available(machine):
        raise TinytitanError("--float8 needs torchao and a GPU with compute capability 8.9+ (H100)")
    if args.profile and not on_gpu:
        # torchtitan 0.2.2 hands the profiler a None activity when there is no GPU and fails.
        print("tinytitan bench: --profile needs a GPU; runs are not profiled", file=sys.stderr)
        args.profile = False
    keep = args.work_dir is not None
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="tinytitan-bench-"))
    print(f"tinytitan bench: {machine.nproc} x {machine.device}, runs in {work_dir}", file=sys.stderr, flush=True)
    try:
        if args.sweep:
            return sweep.run_sweep(flavors, seq_len, schedule, machine, work_dir, args)
        for flavor in flavors:
            for batch in args.local_batch_size or [sweep.default_batch(flavor, on_gpu)]:
                s = Settings(
                    flavor,
                    seq_len,
                    batch,
                    args.compile,
                    args.ac,
                    args.float8,
                    args.reshard,
                    loss_kind=args.loss,
                    chunk_tokens=args.chunk_tokens,
                    deterministic=args.deterministic,
                )
                emit(run_once(s, schedule, machine, work_dir, args.timeout_s, args.profile), args.out)
        return 0
    finally:
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from tinytitan.errors import run_guarded

    parser = argparse.ArgumentParser(prog="train_throughput", description=__doc__.splitlines()[0])
    configure(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args))

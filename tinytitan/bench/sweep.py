"""The throughput sweep: the settings that matter for small models, in the order they matter.

GPU time comes in minutes, so the sweep is a greedy search under a time budget,
not a grid. Per flavor, in phases so that every flavor gets its main figure
before any flavor gets refinements:

A. the config's local batch size, compiled, no activation checkpointing (AC);
B. float8 linears for the flavor with the most FLOPs per token (where torchao and an
   SM89+ GPU are present): its matmuls gain most, and Tiny's float8 speed-up is a target;
C. twice the batch (bigger matmuls, fewer launches per token); on out-of-memory,
   the same batch with selective AC, and below the config's batch if even that fails;
D. float8 for the other flavors, at their best batch;
E. the other loss (``--loss``: chunked or plain) at the best batch (what the chunked loss buys);
F. compile off at the best batch (what compile buys);
G. selective AC at the best batch (what recomputation costs);
H. FSDP without resharding after forward (only with several GPUs).

A run that would not finish inside the budget is skipped with a note on stderr.
``--smoke`` (CI, CPU) sweeps the debug flavor at seq 64 through phases A and C: two runs.
The best bf16 (and float8) run of each flavor is printed again with ``"best": true``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from tinytitan.bench.run import Machine, Settings, StepSchedule, base_config, emit, float8_available, run_once

CPU_BATCH = 4
SMOKE = {"flavor": "debug", "seq_len": 64, "batch": 2}
FIRST_RUN_ESTIMATE_S = {True: 90.0, False: 30.0}  # GPU (compile), CPU


def default_batch(flavor: str, on_gpu: bool) -> int:
    """On GPU the flavor config's local batch size (what training uses); a small one on CPU."""
    if not on_gpu:
        return CPU_BATCH
    from tinytitan.config import load_job_config

    return load_job_config(base_config(flavor)).training.local_batch_size


class Runner:
    """Runs settings once each, inside the budget, and remembers the records."""

    def __init__(self, schedule: StepSchedule, machine: Machine, work_dir: Path, args):
        self.schedule, self.machine, self.work_dir = schedule, machine, work_dir
        self.deadline = time.monotonic() + args.budget_s
        self.timeout_s, self.out, self.profile = args.timeout_s, args.out, args.profile
        self.records: dict[Settings, dict] = {}

    def _estimate(self, s: Settings) -> float:
        same = [r["wall_s"] for k, r in self.records.items() if k.flavor == s.flavor]
        walls = same or [r["wall_s"] for r in self.records.values()]
        return max(walls) if walls else FIRST_RUN_ESTIMATE_S[bool(self.machine.gpus)]

    def run(self, s: Settings) -> dict | None:
        if s in self.records:
            return self.records[s]
        left = self.deadline - time.monotonic()
        if self._estimate(s) > left:
            print(f"sweep: skipped {s.label()} (about {self._estimate(s):.0f}s, {left:.0f}s left)", file=sys.stderr)
            return None
        print(f"sweep: {s.label()}", file=sys.stderr, flush=True)
        record = self.execute(s, timeout_s=min(self.timeout_s, left + 60))
        self.records[s] = record
        emit(record, self.out)
        return record

    def execute(self, s: Settings, timeout_s: float) -> dict:
        return run_once(s, self.schedule, self.machine, self.work_dir, timeout_s, self.profile)

    def best(self, flavor: str, float8: bool) -> tuple[Settings, dict] | None:
        ok = [
            (s, r) for s, r in self.records.items() if s.flavor == flavor and s.float8 == float8 and r["status"] == "ok"
        ]
        return max(ok, key=lambda sr: sr[1]["tokens_per_s_per_gpu"]) if ok else None


def _ok(record: dict | None) -> bool:
    return record is not None and record["status"] == "ok"


def _batches(runner: Runner, base: Settings) -> None:
    """Phase C: double the batch while it helps; fall back to selective AC, then a smaller batch, on OOM."""
    first = runner.records.get(base)
    if first is None:
        return
    if _ok(first):
        bigger = dataclasses.replace(base, local_batch_size=2 * base.local_batch_size)
        record = runner.run(bigger)
        if record is not None and record["status"] == "oom":
            runner.run(dataclasses.replace(bigger, ac="selective"))
        return
    if first["status"] == "oom":
        if not _ok(runner.run(dataclasses.replace(base, ac="selective"))) and base.local_batch_size > 1:
            runner.run(dataclasses.replace(base, local_batch_size=base.local_batch_size // 2))


def run_sweep(flavors: list[str], seq_len: int, schedule: StepSchedule, machine: Machine, work_dir: Path, args) -> int:
    on_gpu = bool(machine.gpus)
    if args.smoke:
        flavors, seq_len = [SMOKE["flavor"]], SMOKE["seq_len"]
    runner = Runner(schedule, machine, work_dir, args)
    batch = {f: SMOKE["batch"] if args.smoke else default_batch(f, on_gpu) for f in flavors}
    loss = {"loss_kind": args.loss, "chunk_tokens": args.chunk_tokens}
    bases = {f: Settings(f, seq_len, batch[f], compile=on_gpu, reshard=args.reshard, **loss) for f in flavors}

    def at_best(flavor: str, **change) -> None:
        best = runner.best(flavor, float8=False)
        if best is not None:
            runner.run(dataclasses.replace(best[0], **change))

    from tinytitan.models import summarize

    float8 = float8_available(machine)
    largest = max(flavors, key=lambda f: summarize(f, seq_len).flops_per_token)
    for f in flavors:  # A
        runner.run(bases[f])
    if float8:  # B
        at_best(largest, float8=True)
    for f in flavors:  # C
        _batches(runner, bases[f])
    for f in flavors if float8 else []:  # D
        at_best(f, float8=True)
    for f in flavors if on_gpu else []:  # E
        at_best(f, loss_kind="plain" if args.loss == "chunked" else "chunked")
    for f in flavors if on_gpu else []:  # F
        at_best(f, compile=False)
    for f in flavors if not args.smoke else []:  # G (the smoke test covers A and C: two runs)
        at_best(f, ac="selective")
    for f in flavors if on_gpu and machine.nproc > 1 else []:  # H
        at_best(f, reshard="never")

    print_best(runner, flavors)
    return 0 if any(r["status"] == "ok" for r in runner.records.values()) else 1


def print_best(runner: Runner, flavors: list[str]) -> None:
    """The best runs again, marked, plus a Markdown table on stderr for the README."""
    rows = []
    for f in flavors:
        bf16 = runner.best(f, float8=False)
        if bf16 is not None:
            emit({**bf16[1], "best": True}, runner.out)
            rows.append(bf16[1])
        fp8 = runner.best(f, float8=True)
        if fp8 is not None:
            speedup = fp8[1]["tokens_per_s_per_gpu"] / bf16[1]["tokens_per_s_per_gpu"] if bf16 else None
            emit({**fp8[1], "best": True, "speedup_vs_bf16": speedup and round(speedup, 3)}, runner.out)
            rows.append(fp8[1])
    print(markdown_table(rows), file=sys.stderr)


def markdown_table(records: list[dict]) -> str:
    head = (
        "| flavor | device | GPUs | seq | batch/GPU | compile | AC | float8 | loss | tokens/s/GPU | MFU | peak mem (GiB) "
        "| step (s) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        mfu = f"{r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(
            f"| {r['flavor']} | {r['device']} | {r['gpus']} | {r['seq_len']} | {r['local_batch_size']} | "
            f"{'on' if r['compile'] else 'off'} | {r['ac']} | {'on' if r['float8'] else 'off'} | "
            f"{r.get('loss_kind', 'plain')} | "
            f"{r['tokens_per_s_per_gpu']:,.0f} | {mfu} | {r['peak_memory_gib']:.1f} | {r['step_time_s']:.3f} |"
        )
    return "\n".join(lines)

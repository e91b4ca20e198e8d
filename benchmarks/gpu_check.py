"""The GPU checks of issue 21 in one command, each phase under a time budget (see benchmarks/gpu_check.sh).

Phases, in priority order; one that would not finish inside the budget is skipped, with a line saying so:

1. loss         the chunked loss (``[loss] kind = "chunked"``, tinytitan/rank/loss.py) at the batches of
                the 2026-12-04 sweep (nano 32, profiled; tiny 16; micro 32): tokens/s, MFU and peak GiB
                next to that sweep's plain-loss figures (REFERENCE);
2. float8       Tiny at batch 16 with float8 and the faster loss (goal: >= 1.3x Tiny's best bf16);
3. resume       Nano with the embedded tokenizer and sample (real loader), bf16, compile off, torchtitan's
                ``[debug] deterministic``, async checkpoints: its rank is SIGKILLed after the first checkpoint
                and restarted by torchrun (``MAX_RESTARTS=1``); the steps between the checkpoint and the kill
                run twice (uninterrupted, then resumed): are their losses exact, how long did the restart take;
4. determinism  what ``[debug] deterministic`` costs: phase 1's Nano run again, deterministic;
5. eval         in-loop ``[eval]`` (lm-eval, the offline task tinytitan_sample_order) on the debug model,
                where lm_eval imports;
6. extras       while budget remains: tiny 8 chunked, nano 32 plain (this session's own control),
                nano 32 at 4096 and 16384 tokens per chunk.

Issue 33's phases (``--phases issue33``, or some of exactness,masking,muon,guards,levers,heldout,autotune):
benchmarks/gpu_levers.py says what each runs and how long it takes. ``--check-configs``: only whether this
checkout's config takes every GPU row's overrides (cheap, on any machine).

One JSON line per result (field ``phase``) on stdout and in --out; a summary table at the end.

    python benchmarks/gpu_check.py --budget-s 450 --out outputs/gpu_check/check.jsonl
    python benchmarks/gpu_check.py --smoke --phases loss,resume    # CPU: the same code on the debug model
    python benchmarks/gpu_check.py --phases issue33 --budget-s 420  # issue 33 on one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout without `pip install`

import gpu_levers  # noqa: E402  (benchmarks/, this script's folder, is on sys.path)
from checkpoint_stall import rank_pid  # noqa: E402

from tinytitan.bench.run import (  # noqa: E402
    Settings,
    StepSchedule,
    detect_machine,
    emit,
    float8_available,
    make_schedule,
    run_once,
)

PHASES = ("loss", "float8", "resume", "determinism", "eval", "extras")
# The 2026-12-04 sweep on one H200 (main at 4678a8e, plain loss): tokens/s, MFU %, peak GiB.
REFERENCE = {
    ("tiny", 8): (59829, 51.4, 48.6),
    ("tiny", 16): (62448, 53.6, 78.1),
    ("micro", 16): (202320, 46.5, 37.4),
    ("micro", 32): (209430, 48.1, 69.1),
    ("nano", 16): (339350, 43.6, 28.2),
    ("nano", 32): (343231, 44.1, 52.9),
}
EVAL_TASK = "tinytitan_sample_order"


@dataclass(frozen=True)
class Plan:
    """What each phase runs: the GPU sizes, or the CPU smoke's."""

    seq: int
    schedule: StepSchedule
    loss_runs: tuple[tuple[str, int], ...]  # (flavor, batch), chunked; the first one profiled
    chunk_tokens: int | None  # [loss] chunk_tokens of the chunked runs; None: the config's
    float8: tuple[str, int]
    extras: tuple[Settings, ...]
    resume: dict  # flavor, seq, batch, steps, interval
    eval_steps: int
    first_run_s: float  # a bench run's estimate before any has run (start-up and compile)
    launch_s: float  # a training launch's estimate (start-up, no compile)


GPU = Plan(
    seq=2048,
    schedule=make_schedule(warmup=4, measure=8, log_freq=4),
    loss_runs=(("nano", 32), ("tiny", 16), ("micro", 32)),
    chunk_tokens=None,
    float8=("tiny", 16),
    extras=(
        Settings("tiny", 2048, 8),
        Settings("nano", 2048, 32, loss_kind="plain"),
        Settings("nano", 2048, 32, chunk_tokens=4096),
        Settings("nano", 2048, 32, chunk_tokens=16384),
    ),
    resume={"flavor": "nano", "seq": 2048, "batch": 4, "steps": 300, "interval": 100},
    eval_steps=8,
    first_run_s=75.0,
    launch_s=40.0,
)
SMOKE = Plan(
    seq=64,
    schedule=make_schedule(warmup=1, measure=1, log_freq=1),
    loss_runs=(("debug", 2),),
    chunk_tokens=48,  # 128 tokens per rank: three chunks, the last one shorter
    float8=("debug", 2),
    extras=(Settings("debug", 64, 2, loss_kind="plain", compile=False),),
    resume={"flavor": "debug", "seq": 64, "batch": 2, "steps": 30, "interval": 10},
    eval_steps=4,
    first_run_s=30.0,
    launch_s=25.0,
)


def log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


class Check:
    """Runs the phases inside the budget and keeps every record for the summary."""

    def __init__(self, plan: Plan, args, machine):
        self.plan, self.machine, self.out = plan, machine, args.out
        self.deadline = time.monotonic() + args.budget_s
        self.work = Path(args.work_dir or tempfile.mkdtemp(prefix="tinytitan-gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.bench_walls: dict[str, float] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, phase: str, record: dict) -> dict:
        record = {"phase": phase, **record}
        emit(record, self.out)
        self.records.append(record)
        return record

    def fits(self, phase: str, what: str, estimate: float) -> bool:
        if estimate <= self.left():
            log(f"{phase}: {what}")
            return True
        log(f"{phase}: skipped {what} (about {estimate:.0f}s, {self.left():.0f}s left)")
        self.record(phase, {"what": what, "status": "skipped", "error": f"budget: {self.left():.0f}s left"})
        return False

    def bench(self, phase: str, s: Settings, profile: bool = False) -> dict | None:
        estimate = self.bench_walls.get(s.flavor) or max(self.bench_walls.values(), default=self.plan.first_run_s)
        if not self.fits(phase, s.label(), estimate):
            return None
        timeout = max(60.0, self.left() + 30)
        r = run_once(s, self.plan.schedule, self.machine, self.work / "bench", timeout, profile=profile)
        self.bench_walls[s.flavor] = max(self.bench_walls.get(s.flavor, 0.0), r["wall_s"])
        ref = REFERENCE.get((s.flavor, s.local_batch_size))
        if ref and r["status"] == "ok" and self.machine.gpus:
            r["plain_2026_12_04"] = {"tokens_per_s": ref[0], "mfu": ref[1], "peak_gib": ref[2]}
            r["speed_vs_plain_2026_12_04"] = round(r["tokens_per_s_per_gpu"] / ref[0], 3)
        if r["status"] != "ok":
            tail_of_run_log(self.work / "bench", s)
        return self.record(phase, {"what": s.label(), **r})


def tail_of_run_log(bench_dir: Path, s: Settings, lines: int = 25) -> None:
    path = bench_dir / s.label().replace(" ", "_").replace("=", "-") / "train.log"
    if path.is_file():
        log(f"last {lines} lines of {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


# ---------------------------------------------------------------- phases 1, 2, 4, 6: throughput runs


def phase_loss(check: Check) -> None:
    for i, (flavor, batch) in enumerate(check.plan.loss_runs):
        s = Settings(flavor, check.plan.seq, batch, chunk_tokens=check.plan.chunk_tokens)
        check.bench("loss", s, profile=(i == 0 and bool(check.machine.gpus)))


def phase_float8(check: Check) -> None:
    flavor, batch = check.plan.float8
    if not float8_available(check.machine):
        check.record("float8", {"what": f"{flavor} bs{batch} float8", "status": "skipped",
                                "error": "no torchao or no SM89+ GPU here"})  # fmt: skip
        return
    chunked = [r for r in check.records if r["phase"] == "loss" and r.get("status") == "ok"
               and (r["flavor"], r["local_batch_size"]) == (flavor, batch)]  # fmt: skip
    ref = REFERENCE.get((flavor, batch), (0, 0, 0))[0]
    loss_kind = "chunked" if chunked and chunked[0]["tokens_per_s_per_gpu"] >= 0.98 * ref else "plain"
    s = Settings(flavor, check.plan.seq, batch, float8=True, loss_kind=loss_kind, chunk_tokens=check.plan.chunk_tokens)
    r = check.bench("float8", s)
    if r is not None and r["status"] == "ok":
        best_bf16 = max([ref] + [c["tokens_per_s_per_gpu"] for c in check.records
                                 if c.get("flavor") == flavor and not c.get("float8") and c.get("status") == "ok"])  # fmt: skip
        r["speedup_vs_best_bf16"] = round(r["tokens_per_s_per_gpu"] / best_bf16, 3)
        log(f"float8: {r['speedup_vs_best_bf16']}x {flavor}'s best bf16 ({best_bf16:,.0f} tokens/s); goal 1.3x")


def phase_determinism(check: Check) -> None:
    flavor, batch = check.plan.loss_runs[0]
    base = [r for r in check.records if r["phase"] == "loss" and r.get("status") == "ok" and r["flavor"] == flavor]
    s = Settings(flavor, check.plan.seq, batch, chunk_tokens=check.plan.chunk_tokens, deterministic=True)
    r = check.bench("determinism", s)
    if r is not None and r["status"] == "ok" and base:
        r["speed_vs_nondeterministic"] = round(r["tokens_per_s_per_gpu"] / base[0]["tokens_per_s_per_gpu"], 3)


def phase_extras(check: Check) -> None:
    for s in check.plan.extras:
        check.bench("extras", s)


# ---------------------------------------------------------------- phase 3: kill, restart, resume


def launcher(dump: Path, overrides: list[str], env_extra: dict) -> tuple[list[str], dict]:
    env = {**os.environ, "NGPU": "1", "CONFIG_FILE": str(REPO / "train_configs/llama3_debug.toml"), **env_extra}
    return [sys.executable, "-m", "tinytitan.launcher.launch", "--job.dump_folder", str(dump), *overrides], env


def metrics_rows(dump: Path) -> list[dict]:
    path = dump / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return rows


def phase_resume(check: Check) -> None:
    """One run: SIGKILL of its rank after the first (async) checkpoint, torchrun restarts it, it resumes.

    The steps between that checkpoint and the kill are trained twice, first uninterrupted, then after
    the resume: with deterministic algorithms their losses must agree exactly.
    """
    p = check.plan.resume
    what = (f"{p['flavor']} seq{p['seq']} bs{p['batch']} bf16 compile=off deterministic, {p['steps']} steps; "
            f"async checkpoint at {p['interval']}, SIGKILL of the rank, torchrun restart")  # fmt: skip
    if not check.fits("resume", what, 2 * check.plan.launch_s):
        return
    overrides = [
        "--model.flavor", p["flavor"], "--training.seq_len", str(p["seq"]),
        "--training.local_batch_size", str(p["batch"]), "--training.steps", str(p["steps"]),
        "--training.mixed_precision_param", "bfloat16", "--compile.no-enable", "--debug.deterministic",
        "--loss.kind", "chunked", "--validation.no-enable", "--metrics.log_freq", "1",
        "--metrics.no-enable_tensorboard", "--lr_scheduler.warmup_steps", "10", "--checkpoint.keep_latest_k", "0",
        "--checkpoint.interval", str(p["interval"]), "--checkpoint.async_mode", "async",
    ]  # fmt: skip
    dump = check.work / "resume"
    subprocess.run(["rm", "-rf", str(dump)], check=True)
    dump.mkdir(parents=True)
    cmd, env = launcher(dump / "run", overrides, {"MAX_RESTARTS": "1"})
    log_path = dump / "train.log"
    t0 = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        result = {"what": what, **kill_and_watch(proc, dump / "run", p["interval"], timeout=max(60.0, check.left()))}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text(errors="replace")
    result.update(wall_s=round(time.monotonic() - t0, 1), launcher_exit=proc.returncode)
    result["restart_lines"] = [ln.strip()[-200:] for ln in text.splitlines() if "restart" in ln.lower()][:4]
    rows = [r for r in metrics_rows(dump / "run") if "loss" in r]
    resumed = resumed_rows(rows)
    first = {r["step"]: r for r in rows[: len(rows) - len(resumed)]}
    again = [r for r in resumed if r["step"] in first]
    if "error" in result or not again:
        log("resume: no kill, or no step trained both before the kill and after the resume:\n" + text[-3000:])
        check.record("resume", {**result, "status": "failed", "error": result.get("error", "no step trained twice")})
        return
    diffs = [abs(r["loss"] - first[r["step"]]["loss"]) for r in again]
    measured = [r["tps"] for s, r in first.items() if s > 10]
    result.update(
        resumed_at_step=resumed[0]["step"],
        compared_steps=f"{again[0]['step']}-{again[-1]['step']}",
        max_abs_loss_diff=max(diffs),
        exact=max(diffs) == 0.0,
        last_step=resumed[-1]["step"],
        deterministic_eager_tokens_per_s=round(sum(measured) / len(measured), 1) if measured else None,
    )
    ok = proc.returncode == 0 and resumed[-1]["step"] == p["steps"]
    check.record("resume", {**result, "status": "ok" if ok else "failed"})
    log(f"resume: killed at step {result['killed_at_step']}, resumed at {result['resumed_at_step']} after "
        f"{result.get('restart_s')}s; max |loss diff| over steps {result['compared_steps']}: {max(diffs):.3g}")  # fmt: skip


def kill_and_watch(proc: subprocess.Popen, dump: Path, interval: int, timeout: float) -> dict:
    """SIGKILLs the rank once checkpoint ``interval`` is complete and two more steps are logged; times the restart."""
    end = time.monotonic() + timeout
    first = dump / "checkpoint" / f"step-{interval}" / ".metadata"

    def steps() -> list[int]:
        return [r["step"] for r in metrics_rows(dump) if "loss" in r]

    while not (first.exists() and max(steps(), default=0) >= interval + 2):
        if proc.poll() is not None or time.monotonic() > end:
            return {"error": f"the run ended or timed out before checkpoint step-{interval} was complete"}
        time.sleep(0.02)
    victim = rank_pid(proc.pid, 0)
    if victim is None or proc.poll() is not None:
        return {"error": "the run finished before the kill: more steps are needed"}
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    out: dict = {}
    while proc.poll() is None and time.monotonic() < end:
        if "restart_s" not in out and resumed_rows([{"step": s} for s in steps()]):
            out["restart_s"] = round(time.monotonic() - killed_at, 1)  # the kill to the restarted run's first step
        time.sleep(0.1)
    proc.wait(timeout=max(1.0, end - time.monotonic()))
    done = steps()
    resumed = resumed_rows([{"step": s} for s in done])
    out["killed_at_step"] = done[len(done) - len(resumed) - 1] if resumed else max(done, default=0)
    return out


def resumed_rows(rows: list[dict]) -> list[dict]:
    """The rows the restarted run wrote: after the place where the step goes back."""
    for i in range(1, len(rows)):
        if rows[i]["step"] <= rows[i - 1]["step"]:
            return rows[i:]
    return []


# ---------------------------------------------------------------- phase 5: in-loop [eval]


def phase_eval(check: Check) -> None:
    what = f"debug model, [eval] {EVAL_TASK} at steps {check.plan.eval_steps // 2} and {check.plan.eval_steps}"
    probe = subprocess.run([sys.executable, "-c", "import lm_eval, datasets"], capture_output=True, text=True)
    if probe.returncode != 0:
        error = (probe.stderr.strip().splitlines() or ["?"])[-1][:200]
        check.record("eval", {"what": what, "status": "skipped", "error": f"lm_eval does not import here: {error}"})
        return
    if not check.fits("eval", what, check.plan.launch_s + 20):
        return
    dump = check.work / "eval"
    subprocess.run(["rm", "-rf", str(dump)], check=True)
    steps = check.plan.eval_steps
    cmd, env = launcher(dump, [
        "--training.steps", str(steps), "--training.local_batch_size", "4", "--checkpoint.no-enable",
        "--validation.no-enable", "--metrics.log_freq", "1", "--eval.tasks", EVAL_TASK,
        "--eval.freq", str(steps // 2), "--eval.limit", "6", "--eval.batch_size", "4",
    ], {})  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(90.0, check.left()))
    rows = {r["step"]: r for r in metrics_rows(dump) if f"eval/{EVAL_TASK}/acc" in r}
    ok = done.returncode == 0 and sorted(rows) == [steps // 2, steps]
    if not ok:
        log("eval: failed:\n" + (done.stdout + done.stderr)[-3000:])
    check.record("eval", {
        "what": what, "status": "ok" if ok else "failed", "wall_s": round(time.monotonic() - t0, 1),
        "scores": {s: r[f"eval/{EVAL_TASK}/acc"] for s, r in rows.items()},
        "eval_time_s": {s: round(r.get("eval/time_s", 0.0), 1) for s, r in rows.items()},
        **({} if ok else {"error": f"exit {done.returncode}, eval rows at steps {sorted(rows)}"}),
    })  # fmt: skip


# ---------------------------------------------------------------- summary


def summary(records: list[dict]) -> str:
    head = "| phase | what | status | tokens/s/GPU | MFU | peak GiB | vs plain 2026-12-04 | note |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        tps = f"{r['tokens_per_s_per_gpu']:,.0f}" if r.get("tokens_per_s_per_gpu") else ""
        mfu = f"{r['mfu']:.1f}%" if r.get("mfu") is not None else ""
        peak = f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") is not None else ""
        ref = r.get("plain_2026_12_04")
        vs = f"{r['speed_vs_plain_2026_12_04']}x; {ref['peak_gib']} GiB" if ref else ""
        note = r.get("note") or r.get("error", "")
        if r["phase"] == "float8" and "speedup_vs_best_bf16" in r:
            note = f"{r['speedup_vs_best_bf16']}x best bf16 (goal 1.3x)"
        if r["phase"] == "determinism" and "speed_vs_nondeterministic" in r:
            note = f"{r['speed_vs_nondeterministic']}x the non-deterministic run"
        if r["phase"] == "resume" and "max_abs_loss_diff" in r:
            note = (f"killed at {r['killed_at_step']}, resumed at {r['resumed_at_step']} in {r.get('restart_s')}s; "
                    f"max loss diff {r['max_abs_loss_diff']:.3g} ({'exact' if r['exact'] else 'not exact'})")  # fmt: skip
        if r["phase"] == "eval" and r.get("scores"):
            note = f"acc {r['scores']}, eval s {r['eval_time_s']}"
        lines.append(f"| {r['phase']} | {r.get('what', '')} | {r['status']} | {tps} | {mfu} | {peak} | {vs} | {note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU-sized: the debug model, a few steps")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated, from {','.join(PHASES + gpu_levers.PHASES)}; issue33: all of issue 33's",
    )
    parser.add_argument(
        "--check-configs",
        action="store_true",
        help="only check that this checkout's config takes every issue-33 GPU row's overrides",
    )
    parser.add_argument("--budget-s", type=float, default=450, help="stop starting runs after this long")
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    parser.add_argument("--work-dir", type=Path, default=None, help="the runs' folders (default: a temp folder)")
    args = parser.parse_args(argv)
    phases = [q for p in args.phases.split(",") if p for q in (gpu_levers.PHASES if p == "issue33" else (p,))]
    unknown = set(phases) - set(PHASES + gpu_levers.PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}: choose from {','.join(PHASES + gpu_levers.PHASES)}")
    if args.check_configs:
        return gpu_levers.check_configs(args.out)
    machine = detect_machine(ngpu=1)
    plan = SMOKE if args.smoke or not machine.gpus else GPU
    check = Check(plan, args, machine)
    log(f"{machine.device}, budget {args.budget_s:.0f}s, phases {','.join(phases)}, runs in {check.work}")
    plan33 = gpu_levers.SMOKE33 if plan is SMOKE else gpu_levers.GPU33
    rows = gpu_levers.Rows(check)
    runners = {"loss": phase_loss, "float8": phase_float8, "resume": phase_resume,
               "determinism": phase_determinism, "eval": phase_eval, "extras": phase_extras,
               **{p: (lambda c, f=f: f(c, rows, plan33)) for p, f in gpu_levers.RUNNERS.items()}}  # fmt: skip
    if set(phases) & set(gpu_levers.PHASES):
        log("issue 33 estimates on one GPU (s): " + ", ".join(f"{p} {gpu_levers.ESTIMATE_S[p]}"
                                                              for p in gpu_levers.PHASES if p in phases))  # fmt: skip
    for phase in PHASES + gpu_levers.PHASES:
        if phase not in phases:
            continue
        try:
            runners[phase](check)
        except subprocess.TimeoutExpired as e:  # the budget ran out in the middle of a launch
            log(f"{phase}: a launch timed out after {e.timeout:.0f}s")
            check.record(phase, {"status": "timeout", "error": f"a launch timed out after {e.timeout:.0f}s"})
        except Exception as e:  # one phase's failure must not cost the others their GPU time
            log(f"{phase}: {type(e).__name__}: {e}")
            check.record(phase, {"status": "failed", "error": f"{type(e).__name__}: {e}"[:300]})
    log("summary\n" + summary(check.records))
    return 0 if any(r["status"] == "ok" for r in check.records) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Issue 33's GPU phases: document masking, Muon, the divergence guards and the next MFU levers, each row
against its baseline in the same run. benchmarks/gpu_check.py runs them (``--phases issue33``), under its
budget, in this order; a row that would not fit is skipped with a line saying so. Estimates are for one
H100/H200 with inductor's cache warm after the first run of a flavor (Nano ~40 s a run, Tiny ~55 s).

1. exactness  (~40 s)  benchmarks/mask_exactness.py on CUDA: Nano at 2048, three documents packed in one
                       window against each alone, per-token loss and gradients; flex, then varlen.
2. masking    (~280 s) at 2048: ``[model] attn_type = "flex"``, ``attn_mask_type = "block_causal"`` against
                       causal SDPA: Nano bs32 (its baseline profiled), Nano with ``varlen``, then Tiny bs16.
                       Synthetic documents of 1024 tokens on average (tinytitan/bench/synthetic.py).
                       Goal: within 10% of causal.
3. guards     (~40 s)  Nano bs32 with ``[guard]`` off (GUARD_OFF) against the config's default (on, once the
                       guards are merged): their cost per step. Goal: < 1%.
4. muon       (~100 s) Muon (MUON_RECIPE) against AdamW, step time: Nano bs32, then Tiny bs16.
5. levers     (~450 s) each against its baseline: SDPA kernel flash, then cuDNN (``[model] sdpa_backend``);
                       Nano with inductor's CUDA graphs (``TORCHINDUCTOR_CUDAGRAPHS=1``: what compile's
                       "reduce-overhead" adds); Python GC: ``[training] gc_freq = 1`` (a collection every step,
                       its pause read from the log) against torchtitan's default (50, automatic GC off);
                       Tiny bs24 with the chunked loss; float8 tensorwise, then rowwise
                       (``[quantize.linear.float8] recipe_name``); then the best combination for Nano and for
                       Tiny, profiled (kernel time: matmul / attention / Triton / other).
6. heldout    (~200 s) Nano on the real loader (the embedded sample and tokenizer: the GPU machine cannot
                       download the Llama 3 one), AdamW then Muon, the same steps: held-out loss against wall
                       time, and the time each recipe takes to reach AdamW's last held-out loss.
7. autotune   (~120 s) Nano with inductor's max-autotune (no CUDA graphs): long to compile, so last.

Left out: Liger's fused kernels. Its fused linear cross-entropy does what ``[loss] kind = "chunked"`` does
(already compiled into chunks; 2026-12-04 rows), and its RMSNorm/SwiGLU/RoPE kernels replace modules of
torchtitan's Llama 3 that inductor already fuses; plugging them in means patching torchtitan's model
classes (no hook), and the wheel is not in util/fetch_gpu_wheels.sh. Not trivially pluggable.

The recipe overrides are `--section.key value` strings; a recipe whose keys this checkout lacks (Muon, the
guards, before their branches merge) is skipped with a line naming the first key refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tinytitan.bench.run import Machine, Settings, base_config, emit, float8_available, training_overrides

REPO = Path(__file__).resolve().parents[1]
PHASES = ("exactness", "masking", "guards", "muon", "levers", "heldout", "autotune")
MASK = ("--model.attn_type", "flex", "--model.attn_mask_type", "block_causal")
VARLEN = ("--model.attn_type", "varlen", "--model.attn_mask_type", "block_causal")
# train_configs/llama3_nano_muon.toml (branch wt-muon): Muon on the hidden matrices, AdamW on the rest.
MUON_RECIPE = ("--optimizer.name", "Muon", "--optimizer.lr", "0.02", "--optimizer.momentum", "0.95",
               "--optimizer.nesterov", "--optimizer.ns_steps", "5", "--optimizer.adamw_lr", "4e-4")  # fmt: skip
GUARD_OFF = ("--guard.no-enable",)
CUDAGRAPHS = (("TORCHINDUCTOR_CUDAGRAPHS", "1"),)
MAX_AUTOTUNE = (("TORCHINDUCTOR_MAX_AUTOTUNE", "1"), ("TORCHINDUCTOR_COORDINATE_DESCENT_TUNING", "1"))
GC_PAUSE = re.compile(r"\[GC\] Performing periodic GC collection took ([0-9.]+) seconds")
LEVER_WIN = 1.01  # a lever joins the combination when it is this much faster than its baseline


@dataclasses.dataclass(frozen=True)
class Plan33:
    """The sizes: one GPU's, or the CPU smoke's (the debug model, the same code)."""

    nano: Settings  # Nano bs32 at 2048: the baseline of most rows
    tiny: Settings  # Tiny bs16 at 2048
    tiny_big_batch: int
    exactness: tuple[str, ...]  # mask_exactness.py arguments
    heldout: dict  # flavor, seq, batch, steps, val_freq


GPU33 = Plan33(
    nano=Settings("nano", 2048, 32),
    tiny=Settings("tiny", 2048, 16),
    tiny_big_batch=24,
    exactness=(),  # its defaults on CUDA: nano, 2048, flex and varlen
    heldout={"flavor": "nano", "seq": 2048, "batch": 16, "steps": 300, "val_freq": 50},
)
SMOKE33 = Plan33(
    nano=Settings("debug", 64, 2, compile=False),
    tiny=Settings("debug", 64, 4, compile=False),
    tiny_big_batch=6,
    exactness=("--flavor", "debug", "--seq-len", "64", "--attn", "flex"),
    heldout={"flavor": "debug", "seq": 64, "batch": 2, "steps": 12, "val_freq": 6},
)


def variant(s: Settings, tag: str, extra=(), env=(), **changes) -> Settings:
    return dataclasses.replace(s, extra=s.extra + tuple(extra), env=s.env + tuple(env),
                               tag=f"{s.tag} {tag}".strip(), **changes)  # fmt: skip


def refused_key(s: Settings, machine) -> str | None:
    """None when this checkout's config takes the row's overrides; else the reason, in one line."""
    from tinytitan.config import load_job_config
    from tinytitan.job_config import validate_job_config

    try:
        validate_job_config(
            load_job_config(base_config(s.flavor), training_overrides(s, _schedule(), Path("/tmp/x"), machine))
        )
    except SystemExit:  # tyro: an unknown key or a bad value, printed on stderr
        return f"this checkout's config refuses {' '.join(s.extra) or 'the row'}"
    except Exception as e:  # noqa: BLE001 - a TinytitanError (a check) or a path: the row cannot run
        return f"{type(e).__name__}: {e}"[:300]
    return None


def _schedule():
    from tinytitan.bench.run import make_schedule

    return make_schedule(1, 1, 1)


class Rows:
    """Runs rows on a Check (benchmarks/gpu_check.py), each baseline once, and compares."""

    def __init__(self, check):
        self.check = check
        self.done: dict[str, dict] = {}

    def run(self, phase: str, s: Settings, baseline: Settings | None = None, profile: bool = False) -> dict | None:
        if s.label() in self.done:
            return self.done[s.label()]
        refused = refused_key(s, self.check.machine) if s.extra else None
        if refused:
            return self.check.record(phase, {"what": s.label(), "status": "skipped", "error": refused})
        r = self.check.bench(phase, s, profile=profile and bool(self.check.machine.gpus))
        if r is None:
            return None
        self.done[s.label()] = r
        base = self.done.get(baseline.label()) if baseline else None
        if base and r["status"] == "ok" and base["status"] == "ok":
            r["baseline"] = baseline.label()
            r["vs_baseline"] = round(r["tokens_per_s_per_gpu"] / base["tokens_per_s_per_gpu"], 4)
            r["note"] = f"{r['vs_baseline']}x {baseline.tag or 'baseline'} ({base['tokens_per_s_per_gpu']:,.0f}/s)"
            _rewrite_last(self.check, r)
        return r

    def pair(self, phase: str, base: Settings, s: Settings, profile_base: bool = False) -> dict | None:
        self.run(phase, base, profile=profile_base)
        return self.run(phase, s, baseline=base)

    def speedup(self, s: Settings) -> float:
        r = self.done.get(s.label())
        return r.get("vs_baseline", 0.0) if r and r.get("status") == "ok" else 0.0


def _rewrite_last(check, record: dict, say: bool = True) -> None:
    """The comparison is known after the row's line was written: write the line again, completed."""
    if check.out is not None:
        lines = check.out.read_text().splitlines()
        lines[-1] = json.dumps(record)
        check.out.write_text("\n".join(lines) + "\n")
    if say:
        print(json.dumps({"phase": record["phase"], "what": record["what"], "vs_baseline": record["vs_baseline"]}),
              flush=True)  # fmt: skip


# ---------------------------------------------------------------- the phases


def phase_exactness(check, rows: Rows, plan: Plan33) -> None:
    if not check.fits("exactness", "mask_exactness.py", 40 if check.machine.gpus else 90):
        return
    cmd = [sys.executable, str(REPO / "benchmarks" / "mask_exactness.py"), *plan.exactness]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(60.0, check.left()))
    results = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    for r in results:
        note = (f"max |loss diff| {r['max_abs_loss_diff']:.2g} (causal control {r['control_causal_max_abs_loss_diff']:.2g}), "
                f"grad rel diff {r['grad_max_rel_diff']}" if "max_abs_loss_diff" in r else r.get("error", ""))  # fmt: skip
        check.record("exactness", {**r, "note": note})
    if not results:
        check.record("exactness", {"what": "mask_exactness.py", "status": "failed", "error": done.stderr[-300:]})


def phase_masking(check, rows: Rows, plan: Plan33) -> None:
    rows.pair("masking", plan.nano, variant(plan.nano, "flex block_causal", MASK), profile_base=True)
    if check.machine.gpus:
        rows.run("masking", variant(plan.nano, "varlen block_causal", VARLEN), baseline=plan.nano)
    else:
        check.record("masking", {"what": variant(plan.nano, "varlen").label(), "status": "skipped",
                                 "error": "varlen attention needs a CUDA GPU"})  # fmt: skip
    rows.pair("masking", plan.tiny, variant(plan.tiny, "flex block_causal", MASK))


def phase_muon(check, rows: Rows, plan: Plan33) -> None:
    for base in (plan.nano, plan.tiny):
        rows.pair("muon", base, variant(base, "muon", MUON_RECIPE))


def phase_guards(check, rows: Rows, plan: Plan33) -> None:
    """The config's default (``[guard] enable = true`` where the guards are merged: every other row has them on)
    against the guards off: 1 - 1/vs_baseline is their cost."""
    r = rows.pair("guards", plan.nano, variant(plan.nano, "guard=off", GUARD_OFF))
    if r is not None and "vs_baseline" in r:
        r["guard_cost_pct"] = round(100 * (1 - 1 / r["vs_baseline"]), 2)
        r["note"] = f"{r['note']}; the guards cost {r['guard_cost_pct']}% (goal < 1%)"
        _rewrite_last(check, r, say=False)


def levers(plan: Plan33) -> dict[str, tuple[Settings, Settings]]:
    """Each lever: (its baseline, the lever alone)."""
    nano, tiny = plan.nano, plan.tiny
    out = {
        "flash": (nano, variant(nano, "sdpa=flash", ("--model.sdpa_backend", "flash"))),
        "cudnn": (nano, variant(nano, "sdpa=cudnn", ("--model.sdpa_backend", "cudnn"))),
        "cudagraphs": (nano, variant(nano, "cudagraphs", env=CUDAGRAPHS)),
        "gc_every_step": (nano, variant(nano, "gc_freq=1", ("--training.gc_freq", "1"))),
        "tiny_big_batch": (tiny, dataclasses.replace(tiny, local_batch_size=plan.tiny_big_batch)),
    }
    tensorwise = dataclasses.replace(tiny, float8=True)  # where float8 cannot run, phase_levers checks its config
    out["float8_tensorwise"] = (tiny, tensorwise)
    out["float8_rowwise"] = (tensorwise, variant(tensorwise, "rowwise",
                                                 ("--quantize.linear.float8.recipe_name", "rowwise")))  # fmt: skip
    return out


def phase_levers(check, rows: Rows, plan: Plan33) -> None:
    chosen = levers(plan)
    for name, (base, s) in chosen.items():
        if s.float8 and not float8_available(check.machine):  # the CPU smoke: its config is checked, no more
            refused = refused_key(s, check.machine)
            check.record("levers", {"what": s.label(), "status": "skipped",
                                    "error": refused or "config ok; no torchao or no SM89+ GPU here"})  # fmt: skip
            continue
        r = rows.pair("levers", base, s)
        if name == "gc_every_step" and r is not None and r.get("status") == "ok":
            pauses = gc_pauses(check, s)
            r["gc_pause_ms"] = pauses  # torchtitan logs them to 10 ms
            base_step = rows.done.get(base.label(), {}).get("step_time_s")
            if base_step:  # a collection every step, against one per 50: the extra step time is one collection
                r["gc_ms_per_collection"] = round(1000 * (r["step_time_s"] - base_step), 2)
            r["note"] = (f"{r.get('note', '')}; a collection costs {r.get('gc_ms_per_collection')} ms "
                         f"(logged pauses {pauses} ms)")  # fmt: skip
            _rewrite_last(check, r, say=False)
    # the best combination per flavor: the levers that won, together, profiled
    nano = plan.nano
    sdpa = max(("flash", "cudnn"), key=lambda n: rows.speedup(chosen[n][1]))
    if rows.speedup(chosen[sdpa][1]) >= LEVER_WIN:
        nano = variant(nano, f"sdpa={sdpa}", ("--model.sdpa_backend", sdpa))
    if rows.speedup(chosen["cudagraphs"][1]) >= LEVER_WIN:
        nano = variant(nano, "cudagraphs", env=CUDAGRAPHS)
    if nano != plan.nano:
        rows.run("levers", variant(nano, "best"), baseline=plan.nano, profile=True)
    tiny = plan.tiny
    if rows.speedup(chosen["tiny_big_batch"][1]) >= LEVER_WIN:
        tiny = chosen["tiny_big_batch"][1]
    if rows.speedup(chosen["float8_tensorwise"][1]) >= LEVER_WIN:
        rowwise = chosen["float8_rowwise"][1]
        extra, tag = (rowwise.extra, rowwise.tag) if rows.speedup(rowwise) > 1.0 else ((), "")
        tiny = dataclasses.replace(tiny, float8=True, extra=tiny.extra + extra, tag=f"{tiny.tag} {tag}".strip())
    if tiny != plan.tiny:
        rows.run("levers", variant(tiny, "best"), baseline=plan.tiny, profile=True)


def gc_pauses(check, s: Settings) -> list[float]:
    log = check.work / "bench" / s.label().replace(" ", "_").replace("=", "-") / "train.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    return [round(1000 * float(x), 1) for x in GC_PAUSE.findall(text)][:12]


def phase_autotune(check, rows: Rows, plan: Plan33) -> None:
    rows.pair("autotune", plan.nano, variant(plan.nano, "max-autotune-no-cudagraphs", env=MAX_AUTOTUNE))


def phase_heldout(check, rows: Rows, plan: Plan33) -> None:
    """Nano on the real loader: AdamW, then Muon, the same steps; held-out loss at each validation."""
    p = plan.heldout
    curves = {}
    for recipe, extra in (("adamw", ()), ("muon", MUON_RECIPE)):
        probe = variant(plan.nano, recipe, extra)
        refused = refused_key(probe, check.machine) if extra else None
        what = f"{p['flavor']} seq{p['seq']} bs{p['batch']} {p['steps']} steps, embedded sample, {recipe}"
        if refused:
            check.record("heldout", {"what": what, "status": "skipped", "error": refused})
            continue
        if not check.fits("heldout", what, check.plan.launch_s + 60):
            return
        curves[recipe] = heldout_run(check, p, recipe, extra, what)
    if {"adamw", "muon"} <= set(curves) and all(curves.values()):
        target = curves["adamw"][-1]["loss"]
        reach = {k: next((c["elapsed_s"] for c in v if c["loss"] <= target), None) for k, v in curves.items()}
        ratio = round(reach["muon"] / reach["adamw"], 3) if reach["muon"] and reach["adamw"] else None
        check.record("heldout", {"what": f"time to AdamW's last held-out loss {target:.4f}", "status": "ok",
                                 "seconds_to_target": reach, "muon_over_adamw": ratio,
                                 "note": f"Muon/AdamW time to target: {ratio}" if ratio else
                                 f"not reached within {p['steps']} steps by {[k for k, v in reach.items() if not v]}"})  # fmt: skip


def heldout_run(check, p: dict, recipe: str, extra, what: str) -> list[dict]:
    from tinytitan.run.folder import RunFolder

    dump = check.work / f"heldout_{recipe}"
    subprocess.run(["rm", "-rf", str(dump)], check=True)
    gpu = bool(check.machine.gpus)
    overrides = [
        "--job.dump_folder", str(dump), "--model.flavor", p["flavor"], "--training.seq_len", str(p["seq"]),
        "--training.local_batch_size", str(p["batch"]), "--training.steps", str(p["steps"]),
        "--training.mixed_precision_param", "bfloat16", "--compile.enable" if gpu else "--compile.no-enable",
        "--loss.kind", "chunked", "--checkpoint.no-enable", "--metrics.no-enable_tensorboard",
        "--metrics.log_freq", str(p["val_freq"]), "--validation.freq", str(p["val_freq"]),
        "--validation.steps", "4", "--validation.seq_len", str(p["seq"]),
        "--validation.local_batch_size", str(p["batch"]), "--lr_scheduler.warmup_steps", str(p["steps"] // 10),
        *extra,
    ]  # fmt: skip
    env = {"NGPU": "1" if gpu else "2", "CONFIG_FILE": str(REPO / "train_configs/llama3_debug.toml")}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=max(90.0, check.left() + 30))  # fmt: skip
    metrics = RunFolder.at(dump).metrics
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    elapsed = {r["step"]: r["time/elapsed_s"] for r in rows if "time/elapsed_s" in r}
    curve = [{"step": r["step"], "elapsed_s": round(elapsed.get(r["step"], float("nan")), 1),
              "loss": round(r["validation/loss"], 4)} for r in rows if "validation/loss" in r]  # fmt: skip
    ok = done.returncode == 0 and bool(curve)
    check.record("heldout", {"what": what, "status": "ok" if ok else "failed", "curve": curve,
                             "wall_s": round(time.monotonic() - t0, 1),
                             "note": f"held-out loss {curve[-1]['loss']} at {curve[-1]['elapsed_s']}s" if curve else "",
                             **({} if ok else {"error": (done.stdout + done.stderr)[-300:]})})  # fmt: skip
    return curve if ok else []


ESTIMATE_S = {
    "exactness": 40,
    "masking": 280,
    "guards": 40,
    "muon": 100,
    "levers": 450,
    "heldout": 200,
    "autotune": 120,
}  # fmt: skip  (one H100/H200; the module docstring says what each runs)


def planned_rows(plan: Plan33, machine) -> list[tuple[str, Settings]]:
    """Every row the throughput phases can run (not the combinations, which depend on the results)."""
    out = [("masking", plan.nano), ("masking", variant(plan.nano, "flex block_causal", MASK)),
           ("masking", plan.tiny), ("masking", variant(plan.tiny, "flex block_causal", MASK)),
           ("masking", variant(plan.nano, "varlen block_causal", VARLEN))]  # fmt: skip
    out += [("muon", variant(b, "muon", MUON_RECIPE)) for b in (plan.nano, plan.tiny)]
    out += [("guards", variant(plan.nano, "guard=off", GUARD_OFF))]
    out += [("levers", s) for _, s in levers(plan).values()]
    return out


def check_configs(out: Path | None) -> int:
    """``gpu_check.py --check-configs``: whether this checkout's config takes every issue-33 GPU row's overrides."""
    machine = Machine(gpus=1, nproc=1, device="NVIDIA H100 80GB HBM3")
    refused = 0
    for phase, s in planned_rows(GPU33, machine):
        reason = refused_key(s, machine)
        refused += reason is not None
        emit({"phase": "configs", "of": phase, "what": s.label(), "status": "refused" if reason else "ok",
              **({"error": reason} if reason else {})}, out)  # fmt: skip
    print(f"gpu_check: configs: {refused} row(s) refused by this checkout's config", file=sys.stderr)
    return 0


RUNNERS = {"exactness": phase_exactness, "masking": phase_masking, "muon": phase_muon, "guards": phase_guards,
           "levers": phase_levers, "heldout": phase_heldout, "autotune": phase_autotune}  # fmt: skip

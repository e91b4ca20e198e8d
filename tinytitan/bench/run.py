"""One throughput run: settings, the training command, and the JSON row it yields.

Training throughput and MFU per flavor: ``tinytitan bench`` / ``benchmarks/train_throughput.py``.

Each measurement is a real torchtitan training run through tinytitan's entry
(``torchrun -m tinytitan.rank.main``, TinyTrainer, the flavor's own TOML config) with
the ``tinytitan_bench`` TrainSpec, whose loader serves synthetic tokens so data
never limits it. Checkpointing, validation and TensorBoard are off; everything
else (mixed precision, compile, activation checkpointing, float8, FSDP) is the
config's or the command line's. The first steps (compile, allocator warm-up) are
not averaged. One JSON line per run goes to stdout::

    tinytitan bench --flavor nano --seq-len 2048 --local-batch-size 16

MFU uses FLOPs per token as torchtitan counts them (``tinytitan models``) against
the GPU's dense bf16 peak; it is null where the peak is unknown (CPU).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tinytitan.bench.profile import TRACE_FOLDER, profile_overrides, read_profile
from tinytitan.config import SOURCE_ROOT, shipped_configs
from tinytitan.errors import TinytitanError
from tinytitan.job_config import FLOAT8_CONVERTER

# On the benchmarked processes' PYTHONPATH: they import this tinytitan, from a checkout or an installed wheel.
IMPORT_ROOT = SOURCE_ROOT
# The embedded tokenizer: the synthetic tokens' EOS id (tinytitan.bench.synthetic), so that a benchmark never
# needs the Llama 3 tokenizer (a gated download); the model's vocabulary is the flavor's, whatever this one's is.
BENCH_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"
AC_MODES = ("none", "selective", "full")
LOSS_KINDS = ("plain", "chunked")  # [loss] kind (tinytitan.rank.loss)
RESHARD_POLICIES = ("default", "always", "never")
PROFILE_EXTRA_STEPS = 2  # the profiler's warm-up step and the profiled step, after the measured ones

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from NVIDIA's data sheets.
# Order matters: the first key found in the device name wins.
PEAK_BF16_FLOPS = (
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM5 (HBM3); also what "NVIDIA H100 80GB HBM3" reports
    ("H200", 989e12),
    ("H800", 989e12),
    ("A100", 312e12),
    ("B200", 2250e12),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU, or None (CPU, unknown GPU): then no MFU is claimed."""
    for key, flops in PEAK_BF16_FLOPS:
        if key in device_name:
            return flops
    return None


@dataclass(frozen=True)
class Settings:
    """One benchmark configuration: what the sweep varies and the JSON reports."""

    flavor: str
    seq_len: int
    local_batch_size: int
    compile: bool = True
    ac: str = "none"
    float8: bool = False
    reshard: str = "default"
    loss_kind: str = "chunked"
    chunk_tokens: int | None = None  # [loss] chunk_tokens; None: the config's
    deterministic: bool = False  # [debug] deterministic: torchtitan's deterministic algorithms
    extra: tuple[str, ...] = ()  # more config overrides (`--section.key value`), after the ones above
    env: tuple[tuple[str, str], ...] = ()  # environment of the ranks, e.g. (("TORCHINDUCTOR_CUDAGRAPHS", "1"),)
    tag: str = ""  # names what `extra` and `env` change, in the label (and so the run folder)

    def label(self) -> str:
        chunk = f" chunk={self.chunk_tokens}" if self.loss_kind == "chunked" and self.chunk_tokens else ""
        return (
            f"{self.flavor} seq{self.seq_len} bs{self.local_batch_size} compile={'on' if self.compile else 'off'} "
            f"ac={self.ac} float8={'on' if self.float8 else 'off'} reshard={self.reshard} loss={self.loss_kind}{chunk}"
            + (" deterministic" if self.deterministic else "")
            + (f" {self.tag}" if self.tag else "")
        )


@dataclass(frozen=True)
class Machine:
    """Where the runs happen: processes per node and what the device is."""

    gpus: int  # 0 on CPU
    nproc: int
    device: str

    @property
    def peak_flops(self) -> float | None:
        return peak_bf16_flops(self.device) if self.gpus else None


def detect_machine(ngpu: int | None = None) -> Machine:
    import torch

    from tinytitan.launcher.launch import resolve_nproc, visible_gpus

    gpus = visible_gpus()
    env = dict(os.environ)
    if ngpu is not None:
        env["NGPU"] = str(ngpu)
    nproc = resolve_nproc(env, gpus)
    device = torch.cuda.get_device_name(0) if gpus else f"CPU ({platform.processor() or platform.machine()})"
    return Machine(gpus=gpus, nproc=nproc, device=device)


def float8_available(machine: Machine) -> bool:
    """torchtitan's float8 converter needs torchao and an SM89+ GPU (H100: SM90)."""
    import importlib.util

    import torch

    return (
        bool(machine.gpus)
        and torch.cuda.get_device_capability(0) >= (8, 9)
        and bool(importlib.util.find_spec("torchao"))
    )


def base_config(flavor: str) -> Path:
    """The flavor's shipped training config: the benchmark measures what training would run."""
    path = shipped_configs().get(flavor)
    if path is None:
        raise TinytitanError(f"no shipped config for flavor {flavor!r}: choose one of {', '.join(shipped_configs())}")
    return path


@dataclass(frozen=True)
class StepSchedule:
    """Steps per run: ``warmup`` steps are not averaged, then ``measure`` steps; one log row per ``log_freq``."""

    warmup: int
    measure: int
    log_freq: int

    @property
    def steps(self) -> int:
        return self.warmup + self.measure


def make_schedule(warmup: int, measure: int, log_freq: int) -> StepSchedule:
    """Rounds warm-up and measurement up to whole log windows, so every averaged row covers measured steps only."""
    if warmup < 1 or measure < 1 or log_freq < 1:
        raise TinytitanError("--warmup, --steps and --log-freq must be at least 1 (step 1 always compiles or warms up)")

    def up(n: int) -> int:
        return math.ceil(n / log_freq) * log_freq

    return StepSchedule(warmup=up(warmup), measure=up(measure), log_freq=log_freq)


def training_overrides(
    s: Settings, schedule: StepSchedule, dump: Path, machine: Machine, profile: bool = False
) -> list[str]:
    """torchtitan overrides on top of the flavor's config."""
    steps = schedule.steps + (PROFILE_EXTRA_STEPS if profile else 0)
    args = [
        "--job.config_file", str(base_config(s.flavor)),
        "--job.dump_folder", str(dump),
        "--model.name", "tinytitan_bench",
        "--model.hf_assets_path", str(BENCH_TOKENIZER),  # its EOS id only (block_causal): no Llama 3 download
        "--experimental.custom_import", "tinytitan.bench.synthetic",
        "--training.steps", str(steps),
        "--training.seq_len", str(s.seq_len),
        "--training.local_batch_size", str(s.local_batch_size),
        "--training.global_batch_size", "-1",  # one micro-batch per step: no accumulation
        "--training.mixed_precision_param", "bfloat16",  # the CPU layer turns it back to float32
        "--lr_scheduler.warmup_steps", "1",
        "--checkpoint.no-enable",  # tyro's spelling of a false boolean
        "--validation.no-enable",
        "--metrics.no-enable_tensorboard",
        "--metrics.log_freq", str(schedule.log_freq),
        "--compile.enable" if s.compile else "--compile.no-enable",
        "--activation_checkpoint.mode", s.ac,
        "--parallelism.fsdp_reshard_after_forward", s.reshard,
        "--loss.kind", s.loss_kind,
    ]  # fmt: skip
    if s.chunk_tokens:
        args += ["--loss.chunk_tokens", str(s.chunk_tokens)]
    if s.deterministic:
        args += ["--debug.deterministic"]
    if s.float8:
        # torchtitan's recipe for small models: tensorwise scaling, the output projection kept in bf16.
        args += ["--model.converters", FLOAT8_CONVERTER, "--quantize.linear.float8.filter_fqns", "output"]
        if machine.nproc > 1:  # all-gather float8 weights instead of bf16 ones
            args += [
                "--quantize.linear.float8.enable_fsdp_float8_all_gather",
                "--quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp",
            ]
    if not machine.gpus:
        args += ["--optimizer.implementation", "foreach"]
    if profile:
        args += profile_overrides(steps)
    return args + list(s.extra)


def effective(s: Settings, machine: Machine) -> Settings:
    """What actually runs: the CPU layer turns compile off and there is no float8 on CPU."""
    if machine.gpus:
        return s
    return dataclasses.replace(s, compile=False, float8=False)


def summarize_rows(rows: list[dict], s: Settings, schedule: StepSchedule, machine: Machine) -> dict:
    """Averages the measured log rows (steps after the warm-up) of one run's metrics.jsonl."""
    from tinytitan.models import summarize

    measured = [r for r in rows if "tps" in r and schedule.warmup < r["step"] <= schedule.steps]
    if not measured:
        raise TinytitanError(f"the run logged no step after the warm-up ({schedule.warmup} steps)")
    step_time = sum(r["time_metrics/end_to_end(s)"] for r in measured) / len(measured)
    tokens_per_s = s.local_batch_size * s.seq_len / step_time
    flops_per_token = summarize(s.flavor, s.seq_len).flops_per_token
    peak = machine.peak_flops
    return {
        "tokens_per_s_per_gpu": round(tokens_per_s, 1),
        "mfu": round(100 * flops_per_token * tokens_per_s / peak, 2) if peak else None,
        "step_time_s": round(step_time, 4),
        "peak_memory_gib": round(max(r["memory/max_reserved(GiB)"] for r in measured), 3),
        "peak_active_memory_gib": round(max(r["memory/max_active(GiB)"] for r in measured), 3),
        "data_loading_pct": round(max(r["time_metrics/data_loading(%)"] for r in measured), 3),
        "flops_per_token": flops_per_token,
        "loss": round(measured[-1]["loss"], 4),
    }


def failure_status(log_text: str) -> str:
    return "oom" if "OutOfMemoryError" in log_text or "out of memory" in log_text else "failed"


def last_error_line(log_text: str) -> str:
    """The most telling line of a failed run's log, for the JSON's ``error`` field."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error:" in ln:
            return ln[-300:]
    return lines[-1][-300:] if lines else ""


def run_once(
    s: Settings, schedule: StepSchedule, machine: Machine, work_dir: Path, timeout_s: float, profile: bool = False
) -> dict:
    """One training run; returns the JSON record (status ok, oom, failed or timeout).

    With ``profile``, two steps follow the measured ones: a profiler warm-up and the
    profiled step, summarised under ``"profile"`` (see ``tinytitan.bench.profile``).
    """
    import torch

    from tinytitan.launcher.launch import process_env, torchrun_command
    from tinytitan.models import FLAVORS

    s = effective(s, machine)
    if s.flavor not in FLAVORS:
        raise TinytitanError(f"unknown flavor {s.flavor!r}: choose one of {', '.join(FLAVORS)}")
    dump = work_dir.resolve() / s.label().replace(" ", "_").replace("=", "-")
    shutil.rmtree(dump, ignore_errors=True)
    dump.mkdir(parents=True)
    env = process_env(os.environ, machine.nproc, machine.gpus)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(IMPORT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(dict(s.env))
    cmd = torchrun_command(machine.nproc, training_overrides(s, schedule, dump, machine, profile), env)
    record = {
        **dataclasses.asdict(s),
        "gpus": machine.nproc if machine.gpus else 0,
        "processes": machine.nproc,
        "device": machine.device,
        "dtype": "bfloat16" if machine.gpus else "float32",
        "fsdp": machine.nproc > 1,
        "steps": schedule.steps,
        "warmup_steps": schedule.warmup,
        "peak_flops": machine.peak_flops,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    log_path = dump / "train.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:  # timeout, or Ctrl-C here: the run has its own session, so end it explicitly
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # torchrun and the ranks it started
                proc.wait()
    record["wall_s"] = round(time.perf_counter() - start, 1)
    log_text = log_path.read_text(errors="replace")
    if returncode is None:
        return {**record, "status": "timeout", "error": f"no result within {timeout_s:.0f}s"}
    if returncode != 0:
        return {**record, "status": failure_status(log_text), "error": last_error_line(log_text)}
    from tinytitan.run.folder import RunFolder

    rows = [json.loads(line) for line in RunFolder.at(dump).metrics.read_text().splitlines() if line.strip()]
    record = {**record, "status": "ok", **summarize_rows(rows, s, schedule, machine)}
    if profile:
        record["profile"] = read_profile(dump)
        shutil.rmtree(dump / TRACE_FOLDER, ignore_errors=True)  # tens of MB per GPU run; the summary stays
    return record


def emit(record: dict, out: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(line + "\n")

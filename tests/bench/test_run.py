"""The throughput benchmark: real CPU training runs on synthetic tokens, and the numbers it derives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tinytitan.bench import run as bench
from tinytitan.bench.run import Machine, Settings, make_schedule, peak_bf16_flops, training_overrides

RECORD_FIELDS = {
    "flavor", "gpus", "processes", "device", "dtype", "seq_len", "local_batch_size", "compile", "ac", "float8",
    "reshard", "fsdp", "steps", "warmup_steps", "tokens_per_s_per_gpu", "mfu", "flops_per_token", "peak_flops",
    "peak_memory_gib", "peak_active_memory_gib", "step_time_s", "data_loading_pct", "loss", "status", "wall_s",
    "torch", "date", "loss_kind", "chunk_tokens", "deterministic",
}  # fmt: skip
CPU = Machine(gpus=0, nproc=2, device="CPU (x86_64)")
H100 = Machine(gpus=1, nproc=1, device="NVIDIA H100 80GB HBM3")


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA GeForce RTX 4090", None),
        ("CPU (x86_64)", None),
    ],
)
def test_peak_flops_by_device_name(name, peak):
    assert peak_bf16_flops(name) == peak


def test_cpu_has_no_peak_so_no_mfu():
    assert CPU.peak_flops is None
    assert H100.peak_flops == 989e12


def test_schedule_rounds_to_whole_log_windows():
    s = make_schedule(warmup=3, measure=7, log_freq=5)
    assert (s.warmup, s.measure, s.steps) == (5, 10, 15)
    assert make_schedule(1, 2, 1).steps == 3


@pytest.mark.parametrize(
    "settings",
    [
        Settings("nano", 2048, 16),
        Settings("tiny", 2048, 8, compile=False, ac="selective", float8=True, reshard="never", loss_kind="plain"),
        Settings("micro", 2048, 32, chunk_tokens=4096, deterministic=True),
        Settings("nano", 2048, 32, extra=("--model.sdpa_backend", "flash"), tag="sdpa=flash"),
    ],
)
def test_overrides_are_keys_torchtitan_accepts(settings, tmp_path):
    """Every override parses with torchtitan's own ConfigManager (a typo or a wrong boolean spelling fails here)."""
    from tinytitan.config import parse_args as parse_job_config

    machine = Machine(gpus=8, nproc=8, device="NVIDIA H100 80GB HBM3")
    job = parse_job_config(training_overrides(settings, make_schedule(5, 15, 5), tmp_path, machine, profile=True))
    assert job.model.name == "tinytitan_bench"
    assert job.model.flavor == settings.flavor
    assert job.training.local_batch_size == settings.local_batch_size
    assert job.training.seq_len == settings.seq_len
    assert job.training.steps == 22  # 20 + the profiler's two
    assert job.compile.enable is settings.compile
    assert job.activation_checkpoint.mode == settings.ac
    assert job.parallelism.fsdp_reshard_after_forward == settings.reshard
    assert ("quantize.linear.float8" in job.model.converters) is settings.float8
    assert job.quantize.linear.float8.enable_fsdp_float8_all_gather is settings.float8
    assert not job.checkpoint.enable and not job.validation.enable and not job.metrics.enable_tensorboard
    assert job.profiling.enable_profiling and job.profiling.profile_freq == 22
    assert job.loss.kind == settings.loss_kind
    assert job.loss.chunk_tokens == (settings.chunk_tokens or 8192)
    assert job.debug.deterministic is settings.deterministic
    assert job.model.sdpa_backend == ("flash" if settings.extra else "auto")  # extra: after the others
    assert Path(job.model.hf_assets_path, "tokenizer.json").is_file()  # the embedded one: no Llama 3 download


def test_synthetic_tokens_are_documents_split_at_eos():
    """The bench's tokens: EOS ends a document about every MEAN_DOC_TOKENS tokens, what block_causal masks split."""
    from tinytitan.bench.synthetic import MEAN_DOC_TOKENS, SyntheticTokens

    batch, _ = next(iter(SyntheticTokens(4096, 4, 8192, dp_rank=0, eos_id=4086)))
    ends = int((batch["input"] == 4086).sum())
    assert 0.5 * 4 * 8192 / MEAN_DOC_TOKENS < ends < 1.5 * 4 * 8192 / MEAN_DOC_TOKENS
    assert batch["input"].shape == (4, 8192) and int(batch["input"].max()) < 4096


def test_summary_mfu_from_flops_per_token_and_peak():
    from tinytitan.models import summarize

    rows = [
        {"step": 5, "tps": 1.0, "time_metrics/end_to_end(s)": 9.0, "loss": 9.0},  # warm-up: not averaged
        *({"step": s, "tps": 1.0, "time_metrics/end_to_end(s)": 0.5, "loss": 8.0, "memory/max_reserved(GiB)": 40.0,
           "memory/max_active(GiB)": 30.0, "time_metrics/data_loading(%)": 0.1} for s in (10, 15)),
        {"step": 20, "tps": 1.0, "time_metrics/end_to_end(s)": 9.0, "loss": 8.0},  # profiled: not averaged
    ]  # fmt: skip
    s = Settings("nano", 2048, 16)
    out = bench.summarize_rows(rows, s, make_schedule(5, 10, 5), H100)
    assert out["step_time_s"] == 0.5
    assert out["tokens_per_s_per_gpu"] == 16 * 2048 / 0.5
    expected = 100 * summarize("nano", 2048).flops_per_token * (16 * 2048 / 0.5) / 989e12
    assert out["mfu"] == pytest.approx(expected, abs=0.01)
    assert out["peak_memory_gib"] == 40.0


def test_failure_status_tells_oom():
    assert bench.failure_status("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate") == "oom"
    assert bench.failure_status("RuntimeError: something else") == "failed"
    assert bench.last_error_line("a\nValueError: bad thing\n  trailing\n") == "ValueError: bad thing"


def test_benchmark_script_trains_on_cpu_and_prints_every_field(tmp_path):
    """benchmarks/train_throughput.py: a few real training steps on 2 CPU processes, one JSON line."""
    out = subprocess.run(
        [sys.executable, "benchmarks/train_throughput.py", "--flavor", "debug", "--seq-len", "64",
         "--local-batch-size", "2", "--ac", "selective", "--warmup", "1", "--steps", "2", "--work-dir", str(tmp_path),
         "--chunk-tokens", "48"],  # the chunked loss (the default) in three chunks of 2 x 64 tokens
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "NGPU": "2"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = out.stdout.strip().splitlines()
    record = json.loads(line)
    assert RECORD_FIELDS <= set(record), RECORD_FIELDS - set(record)
    assert record["status"] == "ok", record
    assert (record["flavor"], record["seq_len"], record["local_batch_size"], record["ac"]) == (
        "debug",
        64,
        2,
        "selective",
    )
    assert (record["gpus"], record["processes"], record["fsdp"], record["dtype"]) == (0, 2, True, "float32")
    assert record["compile"] is False and record["float8"] is False  # what ran on CPU, not what was asked
    assert (record["loss_kind"], record["chunk_tokens"], record["deterministic"]) == ("chunked", 48, False)
    assert record["mfu"] is None and record["peak_flops"] is None
    assert record["tokens_per_s_per_gpu"] > 0 and record["step_time_s"] > 0 and record["peak_memory_gib"] > 0
    assert record["tokens_per_s_per_gpu"] == pytest.approx(2 * 64 / record["step_time_s"], rel=1e-3)
    assert record["flops_per_token"] > 0
    assert 7 < record["loss"] < 10  # uniform random tokens over 4096: about ln(4096) = 8.3
    log = next(Path(tmp_path).glob("*/train.log")).read_text()
    assert "CPU mode" in log and "step:  3" in log
    assert "Chunked output projection + cross-entropy: 48 tokens per chunk" in log

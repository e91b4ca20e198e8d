"""What limits a benchmark run: one profiled training step, summarised from its trace.

With ``bench --profile`` torchtitan's profiler records one step after the
measured ones (so it does not slow them) and writes a Chrome trace per rank.
Rank 0's trace is reduced to the numbers that say where a step's time goes:

- GPU kernel time per category (matmul, attention, communication, Triton-fused
  elementwise/norm/loss kernels, copies, other), and the five longest kernels;
- ``gpu_busy_pct``: the share of the step's span in which some kernel runs; the rest
  is the GPU waiting on the host (launch overhead, Python, data) or on the network;
- ``exposed_comm_pct``: the share of the span in which only communication runs.

Without a GPU the trace has no kernels; then the longest CPU operators are listed.
"""

from __future__ import annotations

import json
from pathlib import Path

TRACE_FOLDER = "profile_traces"
CATEGORIES = (  # first match wins; names lower-cased
    ("communication", ("nccl",)),
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "matmul", "cublas")),
    ("triton", ("triton",)),
    ("copy", ("memcpy", "memset")),
)
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def category(name: str) -> str:
    lower = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in lower for k in keys):
            return cat
    return "other"


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def _minus(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of union ``a`` not covered by union ``b`` (both sorted and disjoint)."""
    total, j = 0.0, 0
    for start, end in a:
        cursor = start
        while j < len(b) and b[j][1] <= cursor:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                total += b[k][0] - cursor
            cursor = max(cursor, b[k][1])
            k += 1
        total += max(0.0, end - cursor)
    return total


def summarize_trace(path: Path, top: int = 5) -> dict:
    """Where the profiled step's time went (times in ms)."""
    events = [e for e in json.loads(Path(path).read_text())["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    steps = [e for e in events if str(e.get("name", "")).startswith("ProfilerStep#")]
    kernels = [e for e in events if e.get("cat") in GPU_CATS]
    by_name: dict[str, float] = {}
    if not kernels:  # CPU only: the longest operators (nested ones overlap; a rough view)
        for e in events:
            if e.get("cat") == "cpu_op":
                by_name[e["name"]] = by_name.get(e["name"], 0.0) + e["dur"]
        ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
        step_ms = max((e["dur"] for e in steps), default=0.0) / 1e3
        return {"step_ms": round(step_ms, 3), "top_cpu_ops_ms": [[n, round(d / 1e3, 3)] for n, d in ranked]}
    per_cat: dict[str, float] = {}
    for e in kernels:
        per_cat[category(e["name"])] = per_cat.get(category(e["name"]), 0.0) + e["dur"]
        by_name[e["name"]] = by_name.get(e["name"], 0.0) + e["dur"]
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in kernels + steps]
    span = max(b for _, b in spans) - min(a for a, _ in spans)
    busy = _union([(e["ts"], e["ts"] + e["dur"]) for e in kernels])
    comm = _union([(e["ts"], e["ts"] + e["dur"]) for e in kernels if category(e["name"]) == "communication"])
    compute = _union([(e["ts"], e["ts"] + e["dur"]) for e in kernels if category(e["name"]) != "communication"])
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return {
        "step_ms": round(span / 1e3, 3),
        "gpu_busy_pct": round(100 * _length(busy) / span, 1),
        "exposed_comm_pct": round(100 * _minus(comm, compute) / span, 1),
        "kernel_ms": {k: round(v / 1e3, 3) for k, v in sorted(per_cat.items(), key=lambda kv: -kv[1])},
        "top_kernels_ms": [[n[:120], round(d / 1e3, 3)] for n, d in ranked],
    }


def profile_overrides(profiled_step: int) -> list[str]:
    """torchtitan profiling of exactly ``profiled_step`` (one warm-up step before it)."""
    return [
        "--profiling.enable_profiling",
        "--profiling.profile_freq", str(profiled_step),
        "--profiling.profiler_warmup", "1",
        "--profiling.profiler_active", "1",
        "--profiling.save_traces_folder", TRACE_FOLDER,
    ]  # fmt: skip


def read_profile(dump: Path) -> dict | None:
    """The summary of rank 0's trace in a run folder, or None when there is none."""
    traces = sorted((dump / TRACE_FOLDER).glob("iteration_*/rank0_trace.json"))
    return summarize_trace(traces[-1]) if traces else None

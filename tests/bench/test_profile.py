"""Trace summaries: where a profiled step's time goes."""

from __future__ import annotations

import json

import torch

from tinytitan.bench.profile import _minus, _union, category, summarize_trace


def kernel(name, ts, dur):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur}


def test_kernel_categories():
    assert category("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT") == "matmul"
    assert category("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert category("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>") == "attention"
    assert category("ncclDevKernel_ReduceScatter_Sum_f32_RING_LL") == "communication"
    assert category("triton_red_fused__to_copy_mul_rsqrt_0") == "triton"
    assert category("Memcpy HtoD (Pageable -> Device)") == "copy"
    assert category("void at::native::vectorized_elementwise_kernel<4>") == "other"


def test_interval_arithmetic():
    assert _union([(5, 7), (0, 2), (1, 3)]) == [(0, 3), (5, 7)]
    # communication 0-10; compute 2-4 and 6-7 covers 3 of it: 7 exposed
    assert _minus([(0, 10)], [(2, 4), (6, 7)]) == 7


def test_gpu_trace_summary(tmp_path):
    """A hand-made 100 us step: 60 us matmul, 10 us attention, 20 us NCCL of which 10 us overlaps compute."""
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#22", "ts": 0, "dur": 100},
        kernel("nvjet_gemm", 0, 60),
        kernel("flash_fwd_kernel", 60, 10),
        kernel("ncclDevKernel_AllGather", 50, 20),  # 50-60 overlaps the gemm, 60-70 the attention
        kernel("ncclDevKernel_ReduceScatter", 80, 10),  # alone: exposed
    ]
    path = tmp_path / "rank0_trace.json"
    path.write_text(json.dumps({"traceEvents": events}))
    out = summarize_trace(path)
    assert out["step_ms"] == 0.1
    assert out["gpu_busy_pct"] == 80.0
    assert out["exposed_comm_pct"] == 10.0
    assert out["kernel_ms"] == {"matmul": 0.06, "communication": 0.03, "attention": 0.01}
    assert out["top_kernels_ms"][0] == ["nvjet_gemm", 0.06]


def test_cpu_trace_from_the_real_profiler(tmp_path):
    """torch.profiler's own Chrome trace (CPU only) is read: the longest operators are listed."""
    a = torch.randn(64, 64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.profiler.record_function("ProfilerStep#1"):  # what the profiler's schedule names a step
            (a @ a).relu()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    out = summarize_trace(path)
    assert out["step_ms"] > 0
    names = [name for name, _ in out["top_cpu_ops_ms"]]
    assert "aten::matmul" in names or "aten::mm" in names

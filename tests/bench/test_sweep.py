"""The sweep: its search order (with scripted outcomes) and the GPU scripts' CPU smoke modes (real runs)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest

from tests.helpers import REPO
from tinytitan.bench import sweep
from tinytitan.bench.run import Machine, Settings, make_schedule

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)


class ScriptedRunner(sweep.Runner):
    """Answers runs from a rule instead of training: the search logic is what is under test."""

    def __init__(self, outcome, machine):
        args = Namespace(budget_s=1e9, timeout_s=1, out=None, profile=False)  # out=None: print only
        super().__init__(make_schedule(1, 1, 1), machine, REPO, args)
        self.outcome = outcome
        self.order: list[Settings] = []

    def execute(self, s, timeout_s):
        self.order.append(s)
        status, tps = self.outcome(s)
        return {"status": status, "tokens_per_s_per_gpu": tps, "wall_s": 1.0}


def test_batch_doubles_and_oom_falls_back_to_selective_ac():
    def outcome(s):
        if s.local_batch_size >= 16 and s.ac == "none":
            return "oom", None
        return "ok", 1000.0 * s.local_batch_size - (100 if s.ac == "selective" else 0)

    runner = ScriptedRunner(outcome, Machine(1, 1, "NVIDIA H100 80GB HBM3"))
    base = Settings("tiny", 2048, 8)
    runner.run(base)
    sweep._batches(runner, base)
    assert runner.order == [base, dataclasses.replace(base, local_batch_size=16),
                            Settings("tiny", 2048, 16, ac="selective")]  # fmt: skip
    best, record = runner.best("tiny", float8=False)
    assert best == Settings("tiny", 2048, 16, ac="selective")


def test_oom_at_the_config_batch_tries_selective_then_half():
    runner = ScriptedRunner(lambda s: ("oom", None), Machine(1, 1, "NVIDIA H100 80GB HBM3"))
    base = Settings("tiny", 2048, 8)
    runner.run(base)
    sweep._batches(runner, base)
    assert [(s.local_batch_size, s.ac) for s in runner.order] == [(8, "none"), (8, "selective"), (4, "none")]
    assert runner.best("tiny", float8=False) is None


def test_budget_skips_runs_that_would_not_finish():
    runner = ScriptedRunner(lambda s: ("ok", 1.0), Machine(1, 1, "NVIDIA H100 80GB HBM3"))
    runner.deadline = 0  # already past
    assert runner.run(Settings("nano", 2048, 16)) is None


def test_markdown_table_row():
    record = {"flavor": "nano", "device": "NVIDIA H100 80GB HBM3", "gpus": 1, "seq_len": 2048, "local_batch_size": 16,
              "compile": True, "ac": "none", "float8": False, "loss_kind": "chunked", "tokens_per_s_per_gpu": 123456.7, "mfu": 51.234,
              "peak_memory_gib": 40.26, "step_time_s": 0.2654}  # fmt: skip
    table = sweep.markdown_table([record]).splitlines()
    assert table[0].count("|") == table[1].count("|") == table[2].count("|")
    assert (
        table[2]
        == "| nano | NVIDIA H100 80GB HBM3 | 1 | 2048 | 16 | on | none | off | chunked | 123,457 | 51.2% | 40.3 | 0.265 |"
    )


def test_gpu_sweep_script_smoke_on_cpu(tmp_path):
    """benchmarks/gpu_sweep.sh --smoke: the script the GPU machine runs, through real CPU training runs."""
    out = subprocess.run(
        ["bash", "benchmarks/gpu_sweep.sh", "--smoke"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OUT": str(tmp_path), "NGPU": "2", "BUDGET_S": "900", "PYTHON": sys.executable},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "sweep.jsonl").read_text().splitlines()]
    runs = [r for r in lines if not r.get("best")]
    best = [r for r in lines if r.get("best")]
    assert [(r["local_batch_size"], r["ac"], r["status"]) for r in runs] == [(2, "none", "ok"), (4, "none", "ok")]
    assert len(best) == 1 and best[0]["flavor"] == "debug"
    assert best[0]["tokens_per_s_per_gpu"] == max(r["tokens_per_s_per_gpu"] for r in runs)
    assert out.stdout.splitlines() == [json.dumps(r) for r in lines]  # stdout carries exactly the JSON lines
    assert "| debug |" in (tmp_path / "sweep.log").read_text()
    assert "torch" in (tmp_path / "env.txt").read_text()


def test_gpu_check_script_resume_phase_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh --smoke, its resume phase: a deterministic run whose rank is SIGKILLed after an
    async checkpoint and restarted by torchrun; the steps trained before the kill and again after the resume
    have the same losses."""
    out = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--smoke", "--phases", "resume"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (record,) = [json.loads(x) for x in (tmp_path / "out" / "check.jsonl").read_text().splitlines()]
    assert out.stdout.splitlines() == [json.dumps(record)]
    assert record["phase"] == "resume" and record["status"] == "ok", record
    assert record["resumed_at_step"] == 11 and record["killed_at_step"] >= 12  # from the async step-10 checkpoint
    assert record["compared_steps"] == f"11-{record['killed_at_step']}" and record["last_step"] == 30
    assert record["exact"] and record["max_abs_loss_diff"] == 0.0
    assert record["launcher_exit"] == 0 and record["restart_s"] > 0
    assert any("rank 0" in line and "SIGKILL" in line and "restart 1 of 1" in line for line in record["restart_lines"])
    log = (tmp_path / "out" / "check.log").read_text()
    assert "| resume |" in log and "(exact)" in log
    assert "torch" in (tmp_path / "out" / "env.txt").read_text()


def test_issue33_gpu_rows_take_this_checkouts_config():
    """benchmarks/gpu_levers.py (gpu_check.py --phases issue33): every row of the GPU plan (masking, the guards,
    Muon, the levers) is a config this checkout takes (a wrong key would cost GPU time); each row has its own
    label (its run folder)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_levers

    machine = Machine(1, 1, "NVIDIA H100 80GB HBM3")
    rows = gpu_levers.planned_rows(gpu_levers.GPU33, machine)
    labels = [s.label() for _, s in rows]
    assert len(set(labels)) == len(labels)
    assert [phase for phase, _ in rows] == ["masking"] * 5 + ["muon"] * 2 + ["guards"] + ["levers"] * 7
    assert [(s.label(), gpu_levers.refused_key(s, machine)) for _, s in rows] == [(s.label(), None) for _, s in rows]
    bad = dataclasses.replace(gpu_levers.GPU33.nano, extra=("--model.sdpa_backend", "fastest"))
    assert "sdpa_backend" in (gpu_levers.refused_key(bad, machine) or "")


def test_mask_exactness_on_cpu():
    """benchmarks/mask_exactness.py's CPU path (forward only): a packed window's per-token losses equal its documents'
    alone, and the causal control differs (the check can fail)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import mask_exactness
    import torch

    from tinytitan.compat import flex_attention_compiled_by

    with flex_attention_compiled_by("eager"):
        r = mask_exactness.check("debug", 64, "flex", torch.device("cpu"))
    assert r["status"] == "ok" and r["exact"], r
    assert r["max_abs_loss_diff"] <= r["tolerance"] < r["control_causal_max_abs_loss_diff"]
    assert sum(r["doc_tokens"]) == 65 and len(r["per_doc_max_abs_loss_diff"]) == 3

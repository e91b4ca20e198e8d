"""``[guard]``: non-finite steps and spikes skipped on every rank, a divergence rolled back, then stopped.

Two real 2-process CPU runs (tests.guard_faults injects the faults): ``faulty`` finishes despite a
NaN gradient on one rank, a loss spike and a divergence rolled back; ``diverged`` (a huge LR)
stops with one line. The rest are unit checks of the decision, the marks and the purge.
"""

from __future__ import annotations

import math
import random
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import launch, read_metrics, small_run_overrides, train_losses
from tinytitan.checkpoint.completeness import purge_checkpoints, saved_step_folders
from tinytitan.checkpoint.inspect import format_report, inspect_checkpoint
from tinytitan.config import shipped_configs
from tinytitan.errors import TinytitanError
from tinytitan.job_config import Guard
from tinytitan.rank.guard import Judge
from tinytitan.run.folder import RunFolder
from tinytitan.run.steps import StepEvent, StepLog, read_events, read_health, write_health

WINDOWS_PER_STEP = 2 * 4  # 2 ranks x local_batch_size 4, no gradient accumulation (small_run_overrides)
GUARD = ["--experimental.custom_import", "tests.guard_faults"]


def guarded_run(dump: Path, steps: int, interval: int, extra: list[str], env: dict | None = None, check=True):
    overrides = [*small_run_overrides(dump, steps=steps, interval=interval), *extra]
    proc = launch(overrides, env=env, check=check)
    (dump / "launch.log").write_text(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """12 steps, a checkpoint every 4: a NaN in rank 1's gradient at step 3, step 6's loss x 1e4 on rank 0,
    NaN gradients at steps 9 and 10 (two skipped in a row: a divergence) -> back to step-8."""
    dump = tmp_path_factory.mktemp("faulty")
    env = {"TINYTITAN_TEST_GUARD": "nan:1:3,spike:0:6,nan:1:9:2"}
    # warmup 3: the spike at 6 is judged; a threshold of 100 sigma: early training's own swings never reach it
    extra = [*GUARD, "--guard.warmup", "3", "--guard.z_threshold", "100", "--guard.max_skipped", "2",
             "--guard.stats_freq", "4"]  # fmt: skip
    guarded_run(dump, 12, 4, extra, env)
    return dump


def finite_weights(step_folder: Path) -> bool:
    from tinytitan.checkpoint.reader import open_checkpoint

    tensors = list(open_checkpoint(step_folder).iter_tensors())
    assert len(tensors) > 10  # every model tensor is read: the check is not vacuous
    return all(bool(torch.isfinite(t).all()) for _, t in tensors)


def test_a_nan_gradient_and_a_spike_are_skipped_and_named_and_the_run_finishes(faulty):
    log = (faulty / "launch.log").read_text()
    assert "tinytitan: step 3 skipped: the gradient norm is nan" in log
    assert "tinytitan: step 6 skipped: a loss spike: " in log
    assert "tinytitan: finished at step 12 of 12" in log
    events = read_events(RunFolder.at(faulty))
    assert [(e.step, e.kind) for e in events.events] == [
        (3, "skipped"), (6, "skipped"), (9, "skipped"), (10, "skipped"), (10, "rolled_back")]  # fmt: skip
    losses = train_losses(faulty)  # a rerun step's later row wins
    assert all(math.isfinite(v) for s, v in losses.items() if s > 3 and s != 6), losses
    assert losses[6] > 1000  # the spike was logged as it was, and not applied: step 7 trained on
    assert losses[12] < losses[1]
    for step in (4, 8, 12):
        assert finite_weights(faulty / "checkpoint" / f"step-{step}")
        assert read_health(faulty / "checkpoint" / f"step-{step}")["healthy"]
    assert read_health(faulty / "checkpoint" / "step-8")["skipped_since_previous"] == 1  # step 6
    # the end summary and inspect say so
    assert "guard            4 steps skipped (3, 6, 9, 10); 1 rollback (at step 10 to step-8" in log
    report = format_report(inspect_checkpoint(faulty / "checkpoint" / "step-8"))
    assert re.search(r"health +healthy \(weights finite, loss \d\.\d{4}; 1 step skipped since the previous checkpoint\)",
                     report)  # fmt: skip


def test_a_divergence_rolls_back_and_skips_the_promised_windows(faulty):
    log = (faulty / "launch.log").read_text()
    assert ("tinytitan: diverged at step 10 (2 steps skipped in a row): rolled back to "
            f"{faulty / 'checkpoint' / 'step-8'}, skipping the data of 2 steps (global windows 64 to 79)") in log  # fmt: skip
    (rolled,) = read_events(RunFolder.at(faulty)).of("rolled_back")
    assert (rolled.checkpoint_step, rolled.skipped_steps) == (8, 2)  # rollback_skip_steps -1: D - C steps
    assert (rolled.first_window, rolled.end_window) == (8 * WINDOWS_PER_STEP, 10 * WINDOWS_PER_STEP)
    # the loader's own count: steps 9-12 trained after the skip, so step-12's data position is 14 steps in
    assert inspect_checkpoint(faulty / "checkpoint" / "step-12")["data"]["windows"] == 14 * WINDOWS_PER_STEP
    rows = [r for r in read_metrics(faulty) if "loss" in r]
    after = rows[[r["step"] for r in rows].index(10) + 1 :]  # the rows after the rollback: steps 9 to 12 again
    assert [r["step"] for r in after] == [9, 10, 11, 12] and all(math.isfinite(r["loss"]) for r in after)
    # per-layer health every 4 steps: the layers' gradient norms add up to the logged one
    health = {r["step"]: r for r in read_metrics(faulty) if "health/grad_norm/output" in r}
    assert sorted(health) == [4, 8, 12]
    total = math.sqrt(sum(v * v for k, v in health[12].items() if k.startswith("health/grad_norm/")))
    assert total == pytest.approx(next(r["grad_norm"] for r in reversed(rows) if r["step"] == 12), rel=1e-4)
    assert all(0 < health[12][f"health/update_ratio/{layer}"] < 1 for layer in ("layers.0", "output"))


def test_a_run_that_diverges_for_good_stops_and_keeps_its_last_good_checkpoint(tmp_path):
    extra = ["--optimizer.lr", "50", "--checkpoint.keep_latest_k", "2", "--guard.max_skipped", "2",
             "--guard.max_rollbacks", "1"]  # fmt: skip
    proc = guarded_run(tmp_path, 6, 1, extra, check=False)
    good = tmp_path / "checkpoint" / "step-1"
    stop = (f"tinytitan: error: training diverged at step 3 (2 steps skipped in a row, 1 rollback tried): stopped; "
            f"the last good checkpoint is {good} (resume or fine-tune from it: --checkpoint.load_step 1")  # fmt: skip
    assert proc.returncode != 0
    assert stop in proc.stdout + proc.stderr
    saved = saved_step_folders(tmp_path / "checkpoint")
    assert [s for s, _ in saved] == [1, 2, 3]  # keep_latest_k 2, and step-1, the newest healthy one
    assert all(finite_weights(path) for _, path in saved)
    assert [read_health(p)["healthy"] for _, p in saved] == [True, False, False]
    assert read_events(RunFolder.at(tmp_path)).counts["stopped"] == 1


def test_a_healthy_debug_run_skips_nothing(debug_run):
    assert read_events(RunFolder.at(debug_run)).events == []
    assert all(read_health(p)["healthy"] for _, p in saved_step_folders(debug_run / "checkpoint"))


# ---------------------------------------------------------------- units


def test_the_judge_skips_non_finite_and_spikes_and_calls_k_in_a_row_a_divergence():
    judge = Judge(window=10, warmup=3, z_threshold=6, max_skipped=2)
    assert judge.judge(float("nan"), 1.0).skip  # judged before any warm-up
    assert not judge.judge(3.0, 1.0).skip and not judge.judge(2.9, 1.1).skip and not judge.judge(2.8, 0.9).skip
    spike = judge.judge(30.0, 1.0)
    assert spike.skip and "loss spike" in spike.reason and not spike.diverged
    assert judge.judge(2.7, float("inf")).diverged  # the second in a row
    assert not judge.judge(2.7, 1.0).skip and judge.in_a_row == 0
    copy = Judge(10, 3, 6, 2)
    copy.load(judge.state())
    assert copy.judge(2.6, 40.0) == judge.judge(2.6, 40.0)  # a resumed run decides the same


def test_the_default_guard_skips_nothing_on_healthy_noisy_training_curves():
    """A stand-in for the shipped configs' long runs: a decaying loss with batch noise, a gradient norm that
    grows through warm-up then drifts down, with ordinary jumps; the defaults must skip none of it."""
    rng = random.Random(0)
    d = Guard()
    judge = Judge(d.window, d.warmup, d.z_threshold, d.max_skipped)
    for step in range(1, 5001):
        loss = 2.5 + 8 * math.exp(-step / 300) + rng.gauss(0, 0.05)
        norm = min(step / 200, 1.0) * (0.4 + 0.6 * math.exp(-step / 1000)) * (1 + rng.gauss(0, 0.15))
        assert not judge.judge(loss, abs(norm) + 1e-3).skip, step
    for name, path in shipped_configs().items():  # every shipped config keeps the defaults on
        assert "[guard]" not in path.read_text(), name


def test_bad_guard_settings_are_one_line_naming_the_key():
    for key, value in (("max_skipped", 0), ("warmup", 500), ("z_threshold", -1), ("rollback_skip_steps", -2)):
        with pytest.raises(TinytitanError, match=rf"^\[guard\] {key} = "):
            Guard(**{key: value}).validate()


def test_keep_latest_k_keeps_the_newest_healthy_checkpoint_while_newer_ones_are_suspect(faulty, tmp_path):
    for step in (1, 2, 3, 4, 5):
        shutil.copytree(faulty / "checkpoint" / "step-4", tmp_path / f"step-{step}")
        write_health(tmp_path / f"step-{step}", {"healthy": step <= 2})
    assert sorted(p.name for p in purge_checkpoints(tmp_path, keep=2, keep_healthy=True)) == ["step-1", "step-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2", "step-4", "step-5"]
    write_health(tmp_path / "step-5", {"healthy": True})  # healthy again: step-2 may go
    assert sorted(p.name for p in purge_checkpoints(tmp_path, keep=2, keep_healthy=True)) == ["step-2"]


def test_step_events_round_trip_with_non_finite_values_and_unknown_kinds(tmp_path):
    from tinytitan.run.steps import append_event

    folder = RunFolder.at(tmp_path)
    append_event(folder, StepEvent(3, "skipped", "the loss is nan", float("nan"), 2.0))
    append_event(folder, StepEvent(7, "averaged", extra={"decay": 0.99}))  # a kind this module does not know
    log = read_events(folder)
    assert log.events[0].loss is None and log.events[0].grad_norm == 2.0
    assert log.counts == {"skipped": 1, "averaged": 1} and log.events[1].extra == {"decay": 0.99}
    assert StepLog(log.events).summary() == "1 step skipped (3)"

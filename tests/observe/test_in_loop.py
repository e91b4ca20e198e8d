"""``[eval]`` in the training loop: scores logged on 2 FSDP ranks, training itself unchanged."""

from __future__ import annotations

import json

import pytest

from tests.helpers import DEBUG_CONFIG, N, launch, read_metrics, small_run_overrides, train_losses
from tinytitan.cli import main
from tinytitan.observe.events import read_scalars
from tinytitan.observe.harness import SAMPLE_TASK

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)

STEPS = 2 * N  # the `uninterrupted` fixture's run, the same but for [eval]
EVAL = ["--eval.tasks", SAMPLE_TASK, "--eval.freq", str(N), "--eval.limit", "6", "--eval.batch_size", "4"]


def test_in_loop_eval_logs_scores_and_changes_no_loss(uninterrupted, tmp_path, capsys):
    with_eval = tmp_path / "eval"
    proc = launch([*small_run_overrides(with_eval, steps=STEPS, interval=N), *EVAL])

    # Bit for bit: the same losses at every step, also after the evaluations (the data order is untouched).
    assert train_losses(with_eval) == train_losses(uninterrupted)
    assert sorted(train_losses(with_eval)) == list(range(1, STEPS + 1))

    rows = {r["step"]: r for r in read_metrics(with_eval) if f"eval/{SAMPLE_TASK}/acc" in r}
    assert sorted(rows) == [N, 2 * N]
    assert all(r["eval/time_s"] > 0 for r in rows.values())
    assert f"eval at step {N} took" in proc.stdout + proc.stderr
    scalars = read_scalars(with_eval)
    assert [s for s, _ in scalars[f"eval/{SAMPLE_TASK}/acc_norm"]] == [N, 2 * N]

    # The two ranks split the documents; gathered, they score what one process scores on the checkpoint.
    capsys.readouterr()
    args = ["eval", "tasks", "--checkpoint", str(with_eval / "checkpoint" / f"step-{STEPS}")]  # flavor etc.: run.toml
    assert main([*args, "--tasks", SAMPLE_TASK, "--limit", "6", "--json"]) == 0
    offline = json.loads(capsys.readouterr().out)["tasks"][SAMPLE_TASK]
    assert rows[STEPS][f"eval/{SAMPLE_TASK}/acc"] == pytest.approx(offline["acc,none"])
    assert rows[STEPS][f"eval/{SAMPLE_TASK}/acc_norm"] == pytest.approx(offline["acc_norm,none"])


def test_eval_section_is_checked_at_start():
    from tinytitan.config import load_job_config
    from tinytitan.errors import TinytitanError
    from tinytitan.job_config import validate_job_config
    from tinytitan.launcher.preflight import check_eval_tasks

    validate_job_config(load_job_config(DEBUG_CONFIG))  # off by default
    on = load_job_config(DEBUG_CONFIG, ["--eval.tasks", f"{SAMPLE_TASK},hellaswag", "--eval.freq", "50"])
    assert on.eval.tasks == [SAMPLE_TASK, "hellaswag"]
    validate_job_config(on)
    check_eval_tasks(on)  # lm-eval knows both
    with pytest.raises(TinytitanError, match=r"unknown lm-eval task\(s\) no_such_task"):
        check_eval_tasks(load_job_config(DEBUG_CONFIG, ["--eval.tasks", "no_such_task", "--eval.freq", "5"]))
    with pytest.raises(TinytitanError, match="freq 0: set freq to N >= 1"):
        validate_job_config(load_job_config(DEBUG_CONFIG, ["--eval.tasks", SAMPLE_TASK]))
    with pytest.raises(TinytitanError, match=r"\[eval\] batch_size 0 must be at least 1"):
        validate_job_config(load_job_config(DEBUG_CONFIG, [*on_args(), "--eval.batch_size", "0"]))
    on.parallelism.tensor_parallel_degree = 2
    with pytest.raises(TinytitanError, match="data-parallel.*tensor_parallel_degree = 2"):
        validate_job_config(on)


def on_args() -> list[str]:
    return ["--eval.tasks", SAMPLE_TASK, "--eval.freq", "5"]

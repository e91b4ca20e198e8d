"""``tinytitan eval tasks --run``: every checkpoint of a run scored, saved, resumed, summarised and plotted."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tinytitan.cli import main
from tinytitan.observe.events import read_scalars
from tinytitan.observe.harness import SAMPLE_TASK


def test_run_curve_is_saved_resumed_and_plotted(debug_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(debug_run, run)
    args = [
        "eval",
        "tasks",
        "--run",
        str(run),
        "--tasks",
        SAMPLE_TASK,
        "--limit",
        "4",
        "--no-progress",
    ]  # run.toml: flavor
    assert main(args) == 0
    saved = {s: json.loads((run / "eval" / f"step-{s}.json").read_text()) for s in (10, 20)}
    for step, result in saved.items():
        assert result["step"] == step and result["tokens"] == step * 2 * 4 * 256
        assert 0 <= result["tasks"][SAMPLE_TASK]["acc,none"] <= 1

    with (run / "eval" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [10, 20]
    assert float(rows[1][f"{SAMPLE_TASK}/acc,none"]) == saved[20]["tasks"][SAMPLE_TASK]["acc,none"]
    table = (run / "eval" / "summary.md").read_text().splitlines()
    # the README's column names: `<task> acc`, no lm-eval `metric,filter` keys, no stderr columns
    assert table[0] == f"| step | tokens | {SAMPLE_TASK} acc | {SAMPLE_TASK} acc_norm |" and len(table) == 4

    scalars = read_scalars(run)
    curve = scalars[f"eval/{SAMPLE_TASK}/acc"]
    assert [s for s, _ in curve] == [10, 20]
    assert curve[1][1] == pytest.approx(saved[20]["tasks"][SAMPLE_TASK]["acc,none"])

    # Killed while scoring step 20: its file never got its final name. The rerun scores only step 20.
    first = (run / "eval" / "step-10.json").stat().st_mtime_ns
    (run / "eval" / "step-20.json").unlink()
    (run / "eval" / "step-20.json.tmp").write_text("{")
    assert main(args) == 0
    assert (run / "eval" / "step-10.json").stat().st_mtime_ns == first
    assert json.loads((run / "eval" / "step-20.json").read_text()) == saved[20]
    assert [s for s, _ in read_scalars(run)[f"eval/{SAMPLE_TASK}/acc"]] == [10, 20]  # not duplicated

    capsys.readouterr()
    assert main([*args[:-2], "3"]) == 2  # other settings: refused, nothing overwritten
    assert "--force" in capsys.readouterr().err
    assert json.loads((run / "eval" / "step-20.json").read_text()) == saved[20]

    out = tmp_path / "curves.png"
    assert main(["plot", str(run), "--out", str(out), "--x", "tokens"]) == 0
    from matplotlib import image

    assert image.imread(str(out)).shape[:2] == (900, 1200)

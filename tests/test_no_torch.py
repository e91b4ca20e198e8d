"""`tinytitan models`, `tinytitan checkpoint inspect` and a finished run's rerun answer without importing
torch, torchtitan or transformers (importing them takes seconds: longer than these answers need).

Each command runs in a fresh interpreter, which then lists the heavy packages it imported. The answers
themselves are checked against what the full path (torch loaded, in this process) says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import DEBUG_CONFIG, REPO, one_line, small_run_overrides, tree_digest
from tinytitan.checkpoint.inspect import format_report, inspect_checkpoint

HEAVY = ("torch", "torchtitan", "transformers", "tyro")
SCRIPT = """
import json, sys
from {module} import main
code = main(sys.argv[1:])
heavy = sorted({{name.split(".")[0] for name in sys.modules}} & set({heavy!r}))
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def run_fresh(args: list[str], module: str = "tinytitan.cli", env: dict | None = None) -> tuple[dict, str]:
    """``module``'s ``main(args)`` in a new interpreter: ({"code", "heavy"}, what it printed before)."""
    script = SCRIPT.format(module=module, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    *out, last = proc.stdout.splitlines()
    return json.loads(last), "\n".join(out)


def test_models_imports_no_torch():
    said, out = run_fresh(["models"])
    assert said == {"code": 0, "heavy": []}
    assert out.splitlines()[1].split()[:7] == ["tiny", "2048", "22", "32", "4", "5632", "128256"]


def test_checkpoint_inspect_imports_no_torch(debug_run):
    step20 = debug_run / "checkpoint" / "step-20"
    said, out = run_fresh(["checkpoint", "inspect", step20])
    assert said == {"code": 0, "heavy": []}
    assert out == format_report(inspect_checkpoint(step20))
    assert "step          20" in out and "flavor        debug" in out and "can resume    yes" in out
    said, out = run_fresh(["checkpoint", "inspect", debug_run, "--all"])
    assert said == {"code": 0, "heavy": []}
    assert [line.split()[0] for line in out.splitlines()] == ["step-10", "step-20"] and "INCOMPLETE" not in out


def finished_overrides(debug_run) -> list[str]:
    """The overrides ``debug_run`` trained with: its rerun."""
    return [*small_run_overrides(debug_run, steps=20, interval=10),
            "--validation.enable", "--validation.freq", "10", "--validation.steps", "2"]  # fmt: skip


def test_a_finished_runs_rerun_imports_no_torch(debug_run):
    before = tree_digest(debug_run)
    line = (f"tinytitan: run at step 20 >= training.steps 20 ({debug_run}/checkpoint/step-20): nothing to do; "
            "raise --training.steps to continue")  # fmt: skip
    # `tinytitan train`, and run_llama_train.sh's entry (CONFIG_FILE and NGPU from the environment)
    said, out = run_fresh(["train", "--config", DEBUG_CONFIG, *finished_overrides(debug_run)])
    assert said == {"code": 0, "heavy": []} and one_line(out) == line
    env = {"CONFIG_FILE": str(DEBUG_CONFIG), "NGPU": "2"}
    said, out = run_fresh(finished_overrides(debug_run), module="tinytitan.launcher.launch", env=env)
    assert said == {"code": 0, "heavy": []} and one_line(out) == line
    assert tree_digest(debug_run) == before

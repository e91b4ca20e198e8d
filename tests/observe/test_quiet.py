"""Without a terminal, `eval tasks` and `generate --model` print no third-party progress bars or git noise;
on a terminal the bars stay (tinytitan.observe.quiet)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

NOISE = ("%|", "\r", "Loading weights", "fatal: not a git repository", "it/s]")


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TQDM_DISABLE", None)
    return subprocess.run([sys.executable, "-m", "tinytitan.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_generate_from_an_export_prints_no_progress_bar_without_a_terminal(debug_export, tmp_path):
    proc = run_cli("generate", "--model", str(debug_export), "--prompt", "def", "--max-new-tokens", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    assert [n for n in NOISE if n in said] == [], said
    assert proc.stdout.startswith("def")


def test_eval_tasks_on_an_export_prints_no_bars_hints_or_git_noise_without_a_terminal(debug_export, tmp_path):
    proc = run_cli("eval", "tasks", "--model", str(debug_export), "--tasks", "tinytitan_sample_order",
                   "--limit", "4", "--json", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    assert [n for n in NOISE if n in said] == [], said
    assert '"tinytitan_sample_order"' in proc.stdout


def test_bars_are_off_only_inside_and_only_without_progress():
    from transformers.utils import logging as hf_logging

    from tinytitan.observe.quiet import third_party

    assert hf_logging.is_progress_bar_enabled()
    with third_party(progress=True):
        assert hf_logging.is_progress_bar_enabled()
    with third_party(progress=False):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()

"""What an export publishes about its run is what happened: a continued run names its parent and the tokens
in all, the stages say where they really ended and what each source gave, datasets appear only when
declared, no path of the training machine leaks, and `push --dry-run` lists what is left to decide."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import STAGE_STEPS, read_metrics
from tinytitan.cli import main

ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~…-])/[\w.-]+/")  # "…/run/checkpoint" is a shortened one


def published(folder: Path) -> str:
    return (folder / "README.md").read_text() + (folder / "tinytitan.json").read_text()


@pytest.fixture(scope="module")
def continued_export(stages_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "stages-export"
    assert main(["export", str(stages_run / "checkpoint" / f"step-{2 * STAGE_STEPS}"), "--out", str(out)]) == 0
    return out


def _tokens_at(run: Path, step: int) -> int:
    return [r for r in read_metrics(run) if r["step"] == step and "n_tokens_seen" in r][-1]["n_tokens_seen"]


def test_a_continued_runs_card_names_the_parent_and_the_tokens_in_all(continued_export, stages_run, debug_run):
    card = (continued_export / "README.md").read_text()
    record = json.loads((continued_export / "tinytitan.json").read_text())
    assert "from scratch" not in card and "random weights" not in card
    parent_tokens, own = _tokens_at(debug_run, 20), _tokens_at(stages_run, 2 * STAGE_STEPS)
    row = next(line for line in card.splitlines() if line.startswith("| Initialised from |"))
    assert f"`…/{debug_run.name}/checkpoint/step-20`" in row and "step 20" in row and f"{parent_tokens:,} tokens" in row
    assert "weights only" in row and "slimpajama 70%" in row  # the parent's own record: its data
    assert f"{own:,}) in this run; " in card and f"({parent_tokens + own:,}) in all" in card
    parent = record["trained"]["initialised_from"]
    assert (parent["step"], parent["ntokens_seen"], parent["from_run_record"]) == (20, parent_tokens, True)
    assert record["trained"]["ntokens_total"] == parent_tokens + own


def test_the_start_lines_and_the_end_summary_name_the_parent_and_the_stages(stages_run, debug_run):
    log = (stages_run / "launch.log").read_text().splitlines()
    initialised = [line for line in log if line.startswith("  initialised      from ")]
    assert len(initialised) == 2  # the start lines and the end summary
    assert all(f"{debug_run.name}/checkpoint/step-20 (weights only" in line for line in initialised)
    assert (
        f"  stages           pretrain steps 1-{STAGE_STEPS}, cooldown steps {STAGE_STEPS + 1}-{2 * STAGE_STEPS}" in log
    )


def test_stages_show_their_real_ends_and_tokens_per_source(continued_export):
    card = (continued_export / "README.md").read_text()
    stages = json.loads((continued_export / "tinytitan.json").read_text())["trained"]["stages"]
    assert [(s["name"], s["first_step"], s["last_step"]) for s in stages] == [
        ("pretrain", 1, STAGE_STEPS), ("cooldown", STAGE_STEPS + 1, 2 * STAGE_STEPS)]  # fmt: skip
    per_stage = STAGE_STEPS * 2 * 4 * 256  # steps x ranks x local batch x seq_len
    assert [sum(s["tokens"].values()) for s in stages] == [per_stage, per_stage]
    assert stages[0]["tokens"]["pydocs"] == 0 < stages[1]["tokens"]["pydocs"]  # the cooldown adds a third source
    assert all(n > 0 for name, n in stages[0]["tokens"].items() if name != "pydocs")
    row = next(line for line in card.splitlines() if line.startswith("| Data stages |"))
    assert f"pretrain: steps 1-{STAGE_STEPS}, " in row and f"cooldown: steps {STAGE_STEPS + 1}-{2 * STAGE_STEPS}" in row
    assert "unknown" not in row and "to the end of the run" in row


def test_the_sample_run_publishes_no_hub_datasets_no_license_guess_and_no_local_path(continued_export, debug_export):
    for folder in (continued_export, debug_export):
        text = published(folder)
        front = text.split("---")[1]
        assert "datasets:" not in front and "license: unknown" in front
        assert ABSOLUTE_PATH.search(text) is None, ABSOLUTE_PATH.search(text).group(0)
        assert "run.toml" not in text.split("```toml")[1].split("```")[0]  # the config block: no config_file
        assert "/tmp" not in text and str(Path.home()) not in text
        assert 'files = "train/chunk*/*.jsonl.zst"' in text  # globs are not paths: left as they are


def test_push_dry_run_lists_what_is_left_to_decide_and_push_states_the_choices(continued_export, tmp_path, capsys):
    import shutil

    assert main(["push", str(continued_export), "--repo-id", "me/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (continued_export / ".tinytitan-local.json").is_file() and ".tinytitan-local.json" not in out  # not uploaded
    decide = out.split("still to decide before publishing:")[1]
    for what in ("license: not chosen", "data licenses: slimpajama, starcoderdata", "datasets:", "visibility: private"):
        assert what in decide, what
    folder = tmp_path / "copy"
    shutil.copytree(continued_export, folder)
    from tinytitan.export.push import restated

    for name, text in restated(folder, "apache-2.0", ["me/my-mix"]).items():
        (folder / name).write_text(text)
    front = (folder / "README.md").read_text().split("---")[1]
    assert "license: apache-2.0" in front and "datasets:\n- me/my-mix" in front
    assert "| License | apache-2.0 |" in (folder / "README.md").read_text()
    assert json.loads((folder / "tinytitan.json").read_text())["datasets"] == ["me/my-mix"]
    assert main(["push", str(folder), "--repo-id", "me/x", "--dry-run", "--public"]) == 0
    decide = capsys.readouterr().out.split("still to decide before publishing:")[1]
    assert "license:" not in decide and "datasets:" not in decide and "visibility" not in decide
    assert "data licenses:" in decide  # only the user can say what the data's terms are


def test_a_quoted_path_with_spaces_is_shortened_whole():
    """A run folder or source with a space in its path: a TOML or JSON string, or a code span, is one path
    (its last part kept), not cut at the space with the rest of the machine's path published."""
    from tinytitan.export.published import scrub

    text = (
        'dump_folder = "/home/ann/my runs/dëbug"\nfiles = [\'/data/a b/SlimPajama-627B\', "/x/y z"]\n'
        '"path": "/srv/my data/run/checkpoint/step-20"\nfrom `/tmp/a b/c` and /plain/dir here, "/" stays'
    )
    assert scrub(text) == (
        'dump_folder = "…/dëbug"\nfiles = [\'…/SlimPajama-627B\', "…/y z"]\n'
        '"path": "…/run/checkpoint/step-20"\nfrom `…/c` and …/dir here, "/" stays'
    )

"""``tinytitan train --help`` lists every config key with its meaning (read from the dataclasses), and
``tinytitan train --check`` runs the launcher's checks and prints the plan without starting or writing."""

from __future__ import annotations

import pytest

from tests.helpers import REPO, tree_digest
from tinytitan import cli
from tinytitan.config import shipped_configs
from tinytitan.config_types import override_keys

SAMPLE = REPO / "tinytitan" / "assets" / "sample"
# The big configs read the Llama 3 tokenizer and the full datasets: checked here against the embedded
# tokenizer (smaller vocabulary: it fits) and the sample folders of the same datasets.
SAMPLE_PATHS = {"data/SlimPajama-627B": SAMPLE / "SlimPajama-627B", "data/starcoderdata": SAMPLE / "starcoderdata"}


def train(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["train", *args])
    except SystemExit as e:  # argparse's --help
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_help_lists_every_key_with_its_meaning_and_every_shipped_config(capsys):
    code, out, _ = train(capsys, "--help")
    assert code == 0
    lines = out.splitlines()
    steps = next(line for line in lines if line.lstrip().startswith("--training.steps "))
    assert "INT" in steps and "How many train steps to run" in steps  # torchtitan's own words for the field
    attn = next(line for line in lines if line.lstrip().startswith("--model.attn_type "))
    assert "(tinytitan)" in attn and "flex" in attn
    stages = lines.index(next(line for line in lines if line.startswith("[[data.stages]]")))
    stage_keys = [line.split()[0] for line in lines[stages + 1 : stages + 5]]
    assert stage_keys == ["name", "until_tokens", "weights", "lr"]
    assert "Global tokens seen (all ranks) when this stage ends" in lines[stages + 2]
    listed = next(line for line in lines if line.startswith("shipped configs"))
    for name in shipped_configs():
        assert f" {name}," in listed + "," and name in out
    assert {"debug", "debug_stages", "nano", "micro", "tiny", "tiny_stages"} <= set(shipped_configs())
    for key in override_keys():  # nothing a --section.key override accepts is missing
        assert f"--{key} " in out or f"--{key}\n" in out, key


def _check_overrides(name: str, dump) -> list[str]:
    from tinytitan.config import load_job_config

    job = load_job_config(name)
    args = ["--job.dump_folder", str(dump)]
    if not (REPO / job.model.hf_assets_path / "tokenizer.json").is_file():
        args += ["--model.hf_assets_path", str(REPO / "tinytitan" / "assets" / "tokenizer")]
    for i, source in enumerate(job.data.sources):
        for real, sample in SAMPLE_PATHS.items():
            if source.path.endswith(real) and not (REPO / real).is_dir():
                args += [f"--data.sources.{i}.path", str(sample)]
                if source.validation_docs:  # the sample's files are small
                    args += [f"--data.sources.{i}.validation_docs", "16"]
    return args


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_check_passes_every_shipped_config_and_writes_nothing(name, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("NGPU", raising=False)
    monkeypatch.chdir(tmp_path)
    before = tree_digest(REPO / "tinytitan")
    code, out, err = train(capsys, "--check", "--config", name, *_check_overrides(name, tmp_path / "run"))
    assert code == 0, err
    assert "passes every start check" in out and "nothing was started or written" in out
    assert "tokens a step" in out and "data readers" in out
    if "stages" in name:
        assert "stage 1/2 'pretrain'" in out and "'cooldown'" in out
    assert not any(tmp_path.iterdir())  # no run folder, no lock, no record
    assert tree_digest(REPO / "tinytitan") == before


MISTAKES = {
    "unknown key": (["--training.stepz", "3"], "did you mean --training.steps?"),
    "wrong type": (["--training.steps", "three"], "--training.steps 'three': it must be an integer"),
    "out of range": (["--training.steps", "0"], "[training] steps = 0: train at least 1 step"),
    "mask without flex": (["--model.attn_mask_type", "block_causal"], "needs attn_type = 'flex'"),
    "unknown stage source": (["--config", "debug_stages", "--data.stages.0.weights", "{nope = 1.0}"], "nope"),
    "missing tokenizer": (["--model.hf_assets_path", "/nonexistent/tok"], "/nonexistent/tok"),
    "missing parent checkpoint": (["--checkpoint.initial_load_path", "/nonexistent/step-20"], "does not exist"),
    "bad text field": (["--data.sources.0.text_field", "body"], "no field 'body'"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_check_exits_2_on_each_documented_mistake_with_nothing_written(mistake, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("NGPU", raising=False)
    monkeypatch.chdir(tmp_path)
    args, said = MISTAKES[mistake]
    code, out, err = train(capsys, "--check", *args, "--job.dump_folder", str(tmp_path / "run"))
    assert code == 2, (out, err)
    assert said in err and err.startswith("tinytitan: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not any(tmp_path.iterdir())


def test_an_unknown_override_points_at_help_that_lists_keys(capsys):
    from tinytitan.config import bad_override

    line = bad_override(["--qqqqqqq.zzzzzzz", "1"])
    assert "tinytitan train --help" in line
    _, out, _ = train(capsys, "--help")
    assert "--training.steps" in out  # the help it points at lists them

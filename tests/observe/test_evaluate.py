"""``tinytitan eval loss``: held-out loss and perplexity per source, from a CPU-trained checkpoint and its HF export."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import DEBUG_CONFIG
from tinytitan.cli import main

# Other windows than the validator's: 2 batches of 2 windows of 128 tokens per source.
ARGS = ["--seq-len", "128", "--batch-size", "2", "--max-batches", "2", "--json"]


def results(capsys) -> dict[str, dict]:
    return {r["source"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}


def test_eval_checkpoint_and_export_per_source(debug_checkpoint, debug_export, capsys):
    assert main(["eval", "loss", "--checkpoint", str(debug_checkpoint), *ARGS]) == 0
    from_ckpt = results(capsys)
    assert set(from_ckpt) == {"slimpajama", "starcoderdata", "all"}
    for r in from_ckpt.values():
        assert math.isfinite(r["loss"]) and 0 < r["loss"] < math.log(4096) + 1
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
        assert r["step"] == 20
    for name in ("slimpajama", "starcoderdata"):
        assert from_ckpt[name]["tokens"] == 2 * 2 * 128  # batches x windows x predictions
    assert from_ckpt["all"]["tokens"] == 2 * 2 * 2 * 128
    mixture = 0.7 * from_ckpt["slimpajama"]["loss"] + 0.3 * from_ckpt["starcoderdata"]["loss"]  # the config's weights
    assert from_ckpt["all"]["loss"] == pytest.approx(mixture)

    # The export's tinytitan.json names the run's record (data) and holds its step: no --config needed.
    assert main(["eval", "loss", "--model", str(debug_export), *ARGS]) == 0
    from_hf = results(capsys)
    for name, r in from_ckpt.items():
        assert from_hf[name]["tokens"] == r["tokens"] and from_hf[name]["step"] == 20
        assert from_hf[name]["loss"] == pytest.approx(r["loss"], abs=1e-4)


def test_eval_at_the_default_reproduces_the_validation_loss_logged_in_training(debug_run, capsys):
    """No flags: the run's record gives the validator's windows (2 steps x 2 ranks x 8), so ``eval loss`` of
    step 20 gives the step-20 validation losses; the old spelling gives the same, with a one-line note."""
    from tinytitan.observe.events import read_scalars

    step20 = str(debug_run / "checkpoint" / "step-20")
    assert main(["eval", "loss", "--checkpoint", step20, "--json"]) == 0
    captured = capsys.readouterr()
    evaluated = {r["source"]: r for r in map(json.loads, captured.out.splitlines())}
    assert "2 x 2 x 8 = 32 windows of 257 tokens per source: as the training validator scored them" in captured.err
    logged = read_scalars(debug_run)
    for source in ("slimpajama", "starcoderdata"):
        assert evaluated[source]["loss"] == pytest.approx(dict(logged[f"validation/{source}/loss"])[20], abs=1e-4)
        assert evaluated[source]["tokens"] == 32 * 256
    assert evaluated["all"]["loss"] == pytest.approx(dict(logged["validation_metrics/loss"])[20], abs=1e-4)

    assert main(["eval", "--checkpoint", step20, "--json"]) == 0  # before `eval loss` / `eval tasks`
    captured = capsys.readouterr()
    assert {r["source"]: r for r in map(json.loads, captured.out.splitlines())} == evaluated
    notes = [line for line in captured.err.splitlines() if line.startswith("tinytitan: note:")]
    assert notes == ["tinytitan: note: `tinytitan eval --checkpoint ...` is now `tinytitan eval loss --checkpoint ...` "
                     "(the old spelling still works, for now)"]  # fmt: skip


def test_trained_model_beats_its_first_checkpoint(debug_run, capsys):
    losses = {}
    for step in (10, 20):
        assert main(["eval", "loss", "--checkpoint", str(debug_run / "checkpoint"), "--step", str(step), *ARGS]) == 0
        losses[step] = results(capsys)["all"]["loss"]
    assert losses[20] < losses[10]


def test_eval_table_without_a_terminal_has_no_progress_bar(debug_checkpoint, capsys):
    assert main(["eval", "loss", "--checkpoint", str(debug_checkpoint), *ARGS[:-1]]) == 0
    captured = capsys.readouterr()
    title, header, *rows = captured.out.splitlines()
    assert title.endswith("step 20")
    assert header.split() == ["source", "tokens", "loss", "perplexity"]
    assert [r.split()[0] for r in rows] == ["slimpajama", "starcoderdata", "all"]
    # stderr is no terminal here: no bars, no cursor escapes; one line says why the figures differ from training's
    assert "\r" not in captured.err and "\x1b[" not in captured.err
    assert "other windows than the training validator's" in captured.err


def test_a_checkpoint_without_a_run_record_needs_a_config(tmp_path, capsys):
    step = tmp_path / "checkpoint" / "step-20"
    step.mkdir(parents=True)
    assert main(["eval", "loss", "--checkpoint", str(step)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no run record (run.toml" in err and "pass --config TOML" in err


def test_a_config_that_disagrees_with_the_record_is_named(debug_checkpoint, tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text(DEBUG_CONFIG.read_text().replace("seq_len = 256        #", "seq_len = 128        #"))
    assert main(["eval", "loss", "--checkpoint", str(debug_checkpoint), "--config", str(other), *ARGS]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tinytitan: warning:")]
    assert any("sets training.seq_len = 128, but the run recorded 256" in w for w in warnings)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seq-len", "-4"], "argument --seq-len: -4 must be at least 1"),
        (["--max-batches", "0"], "argument --max-batches: 0 must be at least 1"),
        (["--model", "x"], "argument --model: not allowed with argument --checkpoint"),
    ],
)
def test_flag_checks_are_argparse_groups_and_one_line(debug_checkpoint, capsys, flags, message):
    assert main(["eval", "loss", "--checkpoint", str(debug_checkpoint), *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"tinytitan: error: tinytitan eval loss: {message} (see `tinytitan eval loss --help`)\n"


def test_eval_needs_loss_or_tasks_and_a_model(capsys):
    assert main(["eval", "loss"]) == 2
    assert "one of the arguments --checkpoint --model is required" in capsys.readouterr().err
    assert main(["eval", "tasks", "--checkpoint", "x"]) == 2
    assert "the following arguments are required: --tasks" in capsys.readouterr().err

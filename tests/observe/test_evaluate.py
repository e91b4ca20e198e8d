"""Held-out loss and perplexity per source, from a CPU-trained checkpoint and from its HF export."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import DEBUG_CONFIG
from tinytitan.cli import main

ARGS = ["--config", str(DEBUG_CONFIG), "--seq-len", "128", "--batch-size", "2", "--max-batches", "2", "--json"]


def results(capsys) -> dict[str, dict]:
    return {r["source"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}


def test_eval_checkpoint_and_export_per_source(debug_checkpoint, debug_export, capsys):
    assert main(["eval", "--checkpoint", str(debug_checkpoint), *ARGS]) == 0
    from_ckpt = results(capsys)
    assert set(from_ckpt) == {"slimpajama", "starcoderdata", "all"}
    for r in from_ckpt.values():
        assert math.isfinite(r["loss"]) and 0 < r["loss"] < math.log(4096) + 1
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    for name in ("slimpajama", "starcoderdata"):
        assert from_ckpt[name]["tokens"] == 2 * 2 * 128  # batches x windows x predictions
    assert from_ckpt["all"]["tokens"] == 2 * 2 * 2 * 128
    mixture = 0.7 * from_ckpt["slimpajama"]["loss"] + 0.3 * from_ckpt["starcoderdata"]["loss"]  # the config's weights
    assert from_ckpt["all"]["loss"] == pytest.approx(mixture)

    assert main(["eval", "--model", str(debug_export), *ARGS]) == 0
    from_hf = results(capsys)
    for name, r in from_ckpt.items():
        assert from_hf[name]["tokens"] == r["tokens"]
        assert from_hf[name]["loss"] == pytest.approx(r["loss"], abs=1e-4)


def test_eval_reproduces_the_validation_loss_logged_in_training(debug_run, capsys):
    """Same held-out windows, same model: ``eval`` of step 20 gives the step-20 validation losses."""
    from tinytitan.observe.events import read_scalars

    # debug_run validates 2 steps x 2 ranks x [validation] local_batch_size 8 = 32 windows = 4 batches of 8
    args = ["--config", str(DEBUG_CONFIG), "--batch-size", "8", "--max-batches", "4", "--json", "--no-progress"]
    assert main(["eval", "--checkpoint", str(debug_run / "checkpoint" / "step-20"), *args]) == 0
    evaluated = results(capsys)
    logged = read_scalars(debug_run)
    for source in ("slimpajama", "starcoderdata"):
        assert evaluated[source]["loss"] == pytest.approx(dict(logged[f"validation/{source}/loss"])[20], abs=1e-4)
    assert evaluated["all"]["loss"] == pytest.approx(dict(logged["validation_metrics/loss"])[20], abs=1e-4)


def test_trained_model_beats_its_first_checkpoint(debug_run, capsys):
    losses = {}
    for step in (10, 20):
        assert main(["eval", "--checkpoint", str(debug_run / "checkpoint"), "--step", str(step), *ARGS]) == 0
        losses[step] = results(capsys)["all"]["loss"]
    assert losses[20] < losses[10]


def test_eval_table_and_progress(debug_checkpoint, capsys):
    assert main(["eval", "--checkpoint", str(debug_checkpoint), *ARGS[:-1]]) == 0
    captured = capsys.readouterr()
    header, *rows = captured.out.splitlines()[1:]
    assert header.split() == ["source", "tokens", "loss", "perplexity"]
    assert [r.split()[0] for r in rows] == ["slimpajama", "starcoderdata", "all"]
    assert "batch" in captured.err  # the progress bar


def test_eval_needs_a_config(debug_checkpoint, capsys):
    assert main(["eval", "--checkpoint", str(debug_checkpoint)]) == 2
    assert "--config" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--seq-len", "--batch-size", "--max-batches"])
def test_eval_refuses_non_positive_sizes_before_loading(debug_checkpoint, capsys, flag):
    args = ["eval", "--checkpoint", str(debug_checkpoint), "--config", str(DEBUG_CONFIG), flag, "-4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{flag} -4 must be at least 1" in err and err.count("\n") == 1

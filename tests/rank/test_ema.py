"""[ema]: the average of the weights, in the ranks and in the checkpoint (tinytitan.rank.ema), exported, evaluated
and refused (``--weights ema``). One 2-process run with [ema] on is trained for the whole file."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from tests.helpers import DEBUG_CONFIG, N, launch, small_run_overrides, train_losses
from tinytitan.checkpoint.reader import open_checkpoint
from tinytitan.cli import main
from tinytitan.config import load_job_config
from tinytitan.errors import TinytitanError
from tinytitan.job_config import Ema, validate_job_config
from tinytitan.rank.ema import WeightAverage, state_dict_name

DECAY = 0.8
EMA_ON = ["--ema.enable", "--ema.decay", str(DECAY)]


def test_the_update_is_the_decay_s_closed_form_with_and_without_warmup():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    for warmup in (False, True):
        config = Ema(enable=True, decay=DECAY, warmup=warmup)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(start[n])
        ema = WeightAverage([model], config, model.state_dict().keys())
        expected = {n: t.clone() for n, t in start.items()}
        for step in (1, 2, 3):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
            ema.update(step)
            d = config.decay_at(step)
            for n, p in model.named_parameters():
                expected[n] = d * expected[n] + (1 - d) * p.detach()
        for n in expected:
            torch.testing.assert_close(ema.state_dict()[n], expected[n], rtol=0, atol=1e-6)
    assert Ema(decay=DECAY, warmup=True).decay_at(1) == 2 / 11 and Ema(decay=DECAY, warmup=True).decay_at(90) == DECAY
    assert Ema(decay=DECAY, warmup=False).decay_at(1) == DECAY


def test_wrapper_names_are_dropped_to_the_state_dict_key():
    assert state_dict_name("layers.0._orig_mod._checkpoint_wrapped_module.attention.wq.weight") == (
        "layers.0.attention.wq.weight"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [(["--ema.decay", "1.0"], r"^\[ema\] decay = 1 is not in \(0, 1\): give the per-step decay"),
     (["--ema.decay", "0"], r"^\[ema\] decay = 0 is not in \(0, 1\)"),
     (["--checkpoint.last_save_model_only"], r"^\[ema\] enable = true but \[checkpoint\] last_save_model_only = "
                                             r"true: .*; set last_save_model_only = false$")],
)  # fmt: skip
def test_bad_ema_settings_are_one_line_before_any_process_starts(overrides, message):
    """validate_job_config: what the launcher runs before torchrun (and each rank again)."""
    with pytest.raises(TinytitanError, match=message):
        validate_job_config(load_job_config(DEBUG_CONFIG, ["--ema.enable", *overrides]))
    validate_job_config(load_job_config(DEBUG_CONFIG, overrides))  # [ema] off: nothing to check


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):

    dump = tmp_path_factory.mktemp("ema_run")
    launch([*small_run_overrides(dump, 2 * N, N), *EMA_ON])
    return dump


def test_resuming_at_n_gives_the_uninterrupted_losses_and_average_bit_for_bit(ema_run, tmp_path):
    dump = tmp_path / "run"
    shutil.copytree(ema_run / "checkpoint" / f"step-{N}", dump / "checkpoint" / f"step-{N}")
    proc = launch([*small_run_overrides(dump, 2 * N, N), *EMA_ON])
    assert f"Training starts at step {N + 1}" in proc.stdout + proc.stderr
    expected, resumed = train_losses(ema_run), train_losses(dump)
    assert [resumed[s] for s in range(N + 1, 2 * N + 1)] == [expected[s] for s in range(N + 1, 2 * N + 1)]
    a = open_checkpoint(ema_run / "checkpoint" / f"step-{2 * N}", weights="ema")
    b = open_checkpoint(dump / "checkpoint" / f"step-{2 * N}", weights="ema")
    assert a.has_ema and list(a.model) == list(b.model)
    for name in a.model:
        assert torch.equal(a.load_tensor(name), b.load_tensor(name)), name


def test_export_of_the_average_differs_from_the_raw_weights_and_says_so(ema_run, tmp_path, capsys):
    step = ema_run / "checkpoint" / f"step-{2 * N}"
    ckpt_raw, ckpt_ema = open_checkpoint(step), open_checkpoint(step, weights="ema")
    assert not torch.equal(ckpt_raw.load_tensor("output.weight"), ckpt_ema.load_tensor("output.weight"))
    assert main(["checkpoint", "inspect", str(step)]) == 0
    assert re.search(r"\nEMA weights +yes: an average of the weights", capsys.readouterr().out)
    exports = {}
    for weights in ("raw", "ema"):
        out = tmp_path / weights
        verify = [] if weights == "ema" else ["--no-verify"]  # raw exports are verified in tests/export
        assert main(["export", str(step), "--out", str(out), "--weights", weights, *verify]) == 0
        record = json.loads((out / "tinytitan.json").read_text())
        assert record["weights"] == weights and (record["verification"] is not None) == (weights == "ema")
        assert ("exponential moving average" in (out / "README.md").read_text()) == (weights == "ema")
        from safetensors.torch import load_file

        exports[weights] = load_file(out / "model.safetensors")
    assert exports["raw"].keys() == exports["ema"].keys()
    differ = [k for k in exports["raw"] if not torch.equal(exports["raw"][k], exports["ema"][k])]
    assert "lm_head.weight" in differ and "model.embed_tokens.weight" in differ
    # the exported average is the checkpoint's, tensor for tensor (the output projection keeps its layout)
    assert torch.equal(exports["ema"]["lm_head.weight"], ckpt_ema.load_tensor("output.weight"))


def test_weights_ema_without_an_average_is_one_line(uninterrupted, tmp_path, capsys):
    step = uninterrupted / "checkpoint" / f"step-{2 * N}"
    for argv in (["export", str(step), "--out", str(tmp_path / "x"), "--weights", "ema"],
                 ["eval", "loss", "--checkpoint", str(step), "--weights", "ema"],
                 ["generate", "--checkpoint", str(step), "--weights", "ema", "--prompt", "a"]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds no average of the weights" in err[0] and "--weights raw" in err[0], err
    assert not (tmp_path / "x").exists()

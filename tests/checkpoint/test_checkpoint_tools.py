"""`tinytitan checkpoint inspect|upgrade` on the session's real run, and an older-layout checkpoint
(``model.``-prefixed keys plus a persisted ``freqs_cis``) built from its step 10: upgrade it, resume
training from it (the losses continue exactly), and export it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.checkpoint.old_layout import write_old_layout
from tests.conftest import DEBUG_RUN_STEPS
from tests.helpers import DEBUG_CONFIG, launch, read_metrics, small_run_overrides, train_losses
from tinytitan.checkpoint.reader import open_checkpoint
from tinytitan.cli import main


def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def step10(debug_run) -> Path:
    return debug_run / "checkpoint" / "step-10"


@pytest.fixture(scope="module")
def old_layout(step10, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("old") / "step-10"
    write_old_layout(step10, out)
    return out


@pytest.fixture(scope="module")
def upgraded(old_layout, tmp_path_factory) -> Path:
    new = tmp_path_factory.mktemp("upgraded") / "step-10"
    assert main(["checkpoint", "upgrade", str(old_layout), str(new)]) == 0
    return new


def test_inspect_current_checkpoint(debug_run, capsys):
    rc, out, _ = _run(capsys, "checkpoint", "inspect", debug_run / "checkpoint", "--step", "latest", "--json")
    info = json.loads(out)
    tokens = [r for r in read_metrics(debug_run) if r["step"] == 20 and "loss" in r]
    assert rc == 0 and info["step"] == 20 and info["ntokens_seen"] == tokens[-1]["n_tokens_seen"]
    assert info["ntokens_per_rank"] * 2 == info["ntokens_seen"]  # torchtitan's train_state counts one of 2 ranks
    assert info["last_loss"] == tokens[-1]["loss"]
    assert (info["layout"], info["freqs_cis"], info["needs_upgrade"], info["flavor"]) == ("flat", False, False, "debug")
    assert info["dtypes"] == {"float32": 39} and info["parameters"] == 5_245_184
    assert info["resumable"] and info["optimizer"] and info["dataloader"]
    assert info["size_on_disk"] > 2 * info["model_bytes"]  # weights + AdamW moments
    rc, text, _ = _run(capsys, "checkpoint", "inspect", debug_run / "checkpoint" / "step-10")
    assert "flat (torchtitan >= 0.2)" in text and "can resume    yes" in text


def test_inspect_old_layout(old_layout, tmp_path, step10, capsys):
    info = json.loads(_run(capsys, "checkpoint", "inspect", old_layout, "--json")[1])
    assert (info["layout"], info["freqs_cis"], info["needs_upgrade"], info["flavor"], info["step"]) == (
        "prefixed",
        True,
        True,
        "debug",
        10,
    )
    model_only = tmp_path / "step-10"  # a model-only checkpoint has no train_state: the step comes from the name
    write_old_layout(step10, model_only, model_only=True)
    _, text, _ = _run(capsys, "checkpoint", "inspect", model_only)
    assert "can resume    no (missing: optimizer, lr_scheduler, dataloader, train_state)" in text
    assert "step          10" in text


def test_reader_accepts_both_layouts(old_layout, step10):
    old, new = dict(open_checkpoint(old_layout).iter_tensors()), dict(open_checkpoint(step10).iter_tensors())
    assert old.keys() == new.keys() and "freqs_cis" not in old
    assert all(torch.equal(old[k], new[k]) for k in new)


def test_upgrade_keeps_everything_but_freqs_cis(old_layout, upgraded, step10):
    before, after = open_checkpoint(old_layout), open_checkpoint(upgraded)
    assert (after.layout, after.freqs_cis_key) == ("flat", None)
    assert set(after.metadata.state_dict_metadata) == set(open_checkpoint(step10).metadata.state_dict_metadata)
    assert sorted(after.other_keys) == sorted(before.other_keys)
    # torchtitan counts one rank's tokens: 10 steps x local batch 4 x seq_len 256 (small_run_overrides)
    assert after.train_state() == before.train_state() == {"step": 10, "ntokens_seen": 10 * 4 * 256}
    state = dict(open_checkpoint(upgraded).iter_tensors())
    reference = dict(open_checkpoint(step10).iter_tensors())
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    exp_avg = "optimizer.state.layers.0.attention.wq.weight.exp_avg"
    assert after.metadata.state_dict_metadata[exp_avg].size == torch.Size([256, 256])


def test_training_resumes_exactly_from_the_upgraded_checkpoint(upgraded, debug_run, tmp_path):
    """Same overrides as `debug_run`, loading step 10 from the upgraded copy: steps 11-20 repeat its losses."""
    overrides = small_run_overrides(tmp_path, steps=DEBUG_RUN_STEPS, interval=10)
    overrides += ["--validation.enable", "--validation.freq", "10", "--validation.steps", "2"]
    overrides += ["--checkpoint.initial_load_path", str(upgraded), "--checkpoint.no-initial-load-model-only"]
    launch(overrides)
    resumed, expected = train_losses(tmp_path), train_losses(debug_run)
    assert sorted(resumed) == list(range(11, DEBUG_RUN_STEPS + 1))
    assert all(resumed[s] == expected[s] for s in resumed), (resumed, expected)


def test_upgraded_and_old_checkpoints_export(old_layout, upgraded, tmp_path, capsys):
    """The upgraded checkpoint exports (verified); the old one directly gives the same bytes."""
    rc, printed, err = _run(capsys, "export", upgraded, "--out", tmp_path / "new", "--config", DEBUG_CONFIG)
    assert rc == 0 and "verified with transformers" in printed, err
    rc, _, err = _run(capsys, "export", old_layout, "--out", tmp_path / "old", "--config", DEBUG_CONFIG, "--no-verify")
    assert rc == 0, err
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (tmp_path / "old" / name).read_bytes() == (tmp_path / "new" / name).read_bytes(), name


def test_upgrade_refusals(step10, old_layout, tmp_path, capsys):
    rc, _, err = _run(capsys, "checkpoint", "upgrade", step10, tmp_path / "x")
    assert rc == 2 and "already in the layout torchtitan 0.2.2 resumes from" in err and not (tmp_path / "x").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    rc, _, err = _run(capsys, "checkpoint", "upgrade", old_layout, occupied)
    assert rc == 2 and "pass --force" in err and [p.name for p in occupied.iterdir()] == ["keep.txt"]
    rc, _, err = _run(capsys, "checkpoint", "upgrade", old_layout, old_layout / "inside")
    assert rc == 2 and "overlaps OLD" in err


def test_upgrade_force_never_replaces_a_folder_holding_old(old_layout, capsys):
    """NEW = an ancestor of OLD with --force once deleted OLD and its siblings; now it is refused."""
    parent = old_layout.parent
    (parent / "sibling.txt").write_text("unrelated")
    before = {p: p.read_bytes() for p in parent.rglob("*") if p.is_file()}
    rc, out, err = _run(capsys, "checkpoint", "upgrade", old_layout, parent, "--force")
    assert rc == 2 and "overlaps OLD" in err and "even with --force" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in parent.rglob("*") if p.is_file()} == before

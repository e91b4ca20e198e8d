"""`tinytitan export` on a real 2-process CPU run (the session's `debug_run`): both formats load with
transformers / torch and match the trained torchtitan model; bad input leaves --out untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from tests.helpers import DEBUG_CONFIG, REPO, read_metrics
from tinytitan.checkpoint.reader import open_checkpoint
from tinytitan.cli import main
from tinytitan.export.parity import greedy_torchtitan, random_ids
from tinytitan.models import build_torchtitan, flavor_args

SEQ_LEN = 256  # training.seq_len of the debug config
TOKENIZER = REPO / "tinytitan" / "assets" / "tokenizer"


@pytest.fixture(scope="module")
def step20(debug_run) -> Path:
    return debug_run / "checkpoint" / "step-20"


@pytest.fixture(scope="module")
def exported(step20, tmp_path_factory) -> Path:
    """`--format both` in float32, through the CLI."""
    out = tmp_path_factory.mktemp("exports") / "debug-both"
    rc = main(
        [
            "export",
            str(step20.parent),
            "--step",
            "latest",
            "--out",
            str(out),
            "--config",
            str(DEBUG_CONFIG),
            "--format",
            "both",
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def reference(step20):
    return dict(open_checkpoint(step20).iter_tensors())


def test_hf_folder_matches_the_trained_model(exported, reference):
    """transformers' AutoModel/AutoTokenizer on the folder vs torchtitan on the checkpoint, at the full seq_len."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(exported)
    tt = build_torchtitan(flavor_args("debug"), reference, SEQ_LEN)
    ids = random_ids(4096, SEQ_LEN, seed=7)
    with torch.no_grad():
        diff = (hf(input_ids=ids).logits - tt(ids)).abs().max().item()
    assert diff <= 1e-4, diff

    text = "def hello_world():\n    print("
    prompt = tok(text, return_tensors="pt").input_ids
    # bos first, as the data loader put it before every training document; then the training tokenizer's ids
    assert prompt[0, 0].item() == hf.config.bos_token_id == tok.bos_token_id
    assert prompt[0, 1:].tolist() == Tokenizer.from_file(str(TOKENIZER / "tokenizer.json")).encode(text).ids
    assert tok.decode(prompt[0], skip_special_tokens=True) == text
    with torch.no_grad():
        hf_tokens = hf.generate(prompt, max_new_tokens=20, do_sample=False)[0, prompt.shape[1] :].tolist()
    assert hf_tokens == greedy_torchtitan(tt, prompt, 20, hf.config.eos_token_id)


def test_config_is_derived_from_the_flavor(exported, debug_run):
    config = json.loads((exported / "config.json").read_text())
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert config["rope_parameters"] == rope
    assert config["rope_scaling"] == {k: v for k, v in rope.items() if k != "rope_theta"}  # for transformers 4.x
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
    ) == (256, 4, 8, 4)
    assert (config["intermediate_size"], config["vocab_size"], config["rms_norm_eps"]) == (768, 4096, 1e-5)
    assert config["tie_word_embeddings"] is False and config["max_position_embeddings"] == 8192 * 8
    assert (config["bos_token_id"], config["eos_token_id"]) == (4085, 4086)  # <|begin_of_text|>, <|end_of_text|>
    assert json.loads((exported / "generation_config.json").read_text())["eos_token_id"] == 4086

    card = (exported / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "license: unknown" in front  # no license chosen for the user
    assert "datasets:" not in front  # the bundled sample declares no Hub dataset (folder names are not guessed)
    assert "pretrained from random weights" in card
    last = [r for r in read_metrics(debug_run) if r["step"] == 20 and "loss" in r][-1]
    assert "| Training steps | 20 |" in card and f"{last['loss']:.4f} (step 20)" in card
    assert f"({last['n_tokens_seen']:,})" in card
    assert 'flavor = "debug"' in card  # the training config
    record = json.loads((exported / "tinytitan.json").read_text())
    assert record["verification"]["max_abs_diff"] <= 1e-4 and record["verification"]["greedy_match"]


def test_meta_folder_holds_the_checkpoint_weights(exported, reference):
    meta = exported / "original"
    state = torch.load(meta / "consolidated.00.pth", weights_only=True)
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    params = json.loads((meta / "params.json").read_text())
    assert params == {
        "dim": 256,
        "n_layers": 4,
        "n_heads": 8,
        "n_kv_heads": 4,
        "vocab_size": 4096,
        "multiple_of": 256,
        "norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
    }


def test_bfloat16_export_is_verified_with_its_own_bound(step20, tmp_path, capsys):
    out = tmp_path / "bf16"
    assert main(["export", str(step20), "--out", str(out), "--config", str(DEBUG_CONFIG), "--dtype", "bfloat16"]) == 0
    printed = capsys.readouterr().out
    assert "bfloat16 arithmetic vs float32 model" in printed
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16
    record = json.loads((out / "tinytitan.json").read_text())["verification"]
    assert record["max_abs_diff"] <= 1e-4 and record["bf16_max_abs_diff"] <= record["bf16_bound"]


def test_missing_rope_scaling_changes_the_logits(exported, reference, tmp_path):
    """Why config.json is derived: without rope_parameters transformers loads fine but computes other logits."""
    from tinytitan.errors import TinytitanError
    from tinytitan.export.parity import verify_hf_folder

    broken = tmp_path / "no-rope"
    shutil.copytree(exported, broken, ignore=shutil.ignore_patterns("original"))
    config = json.loads((broken / "config.json").read_text())
    del config["rope_parameters"], config["rope_scaling"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(TinytitanError, match="differs from the torchtitan model"):
        verify_hf_folder(broken, flavor_args("debug"), reference, seq_len=SEQ_LEN, dtype=torch.float32)


def test_an_inconclusive_float32_comparison_is_decided_in_float64(exported, reference, monkeypatch):
    """Float32 noise depends on kernels and threads; a correct export must never be called wrong for it."""
    from tinytitan.export import parity

    monkeypatch.setattr(parity, "FP32_BOUND", 0.0)  # every float32 figure is now "over the bound"
    result = parity.verify_hf_folder(exported, flavor_args("debug"), reference, seq_len=SEQ_LEN, dtype=torch.float32)
    assert result.max_abs_diff > 0.0 and result.fp64_max_abs_diff is not None
    assert result.fp64_max_abs_diff < result.max_abs_diff  # float64 is the more precise arbiter
    assert result.fp64_max_abs_diff <= parity.FP64_BOUND and result.greedy_match
    assert "float64 decided" in result.describe()


def test_sharded_export_loads(step20, tmp_path, monkeypatch):
    from tinytitan.export import safetensors_io
    from tinytitan.export.pipeline import export

    monkeypatch.setattr(safetensors_io, "MAX_SHARD_BYTES", 8 * 2**20)
    result = export(step20, tmp_path / "sharded", config=DEBUG_CONFIG)  # verification loads it with transformers
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2 and len(index["weight_map"]) == 39
    assert result.verification.max_abs_diff <= 1e-4


# -- bad input: one line on stderr, exit 2, --out as it was ---------------------------------------


def _export(capsys, *args) -> tuple[int, str]:
    rc = main(["export", *map(str, args)])
    return rc, capsys.readouterr().err


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


@pytest.fixture
def occupied(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    return out


def _no_leftovers(out: Path) -> None:
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


def test_refuses_a_non_empty_out_without_force(step20, occupied, capsys):
    rc, err = _export(capsys, step20, "--out", occupied, "--config", DEBUG_CONFIG, "--no-verify")
    assert rc == 2 and "is not empty: pass --force" in err and err.count("\n") == 1
    assert _snapshot(occupied) == {Path("keep.txt"): b"mine"}
    assert _export(capsys, step20, "--out", occupied, "--config", DEBUG_CONFIG, "--no-verify", "--force")[0] == 0
    assert not (occupied / "keep.txt").exists() and (occupied / "model.safetensors").is_file()
    _no_leftovers(occupied)


def test_wrong_flavor_names_the_tensor_and_the_flavor_that_fits(step20, occupied, tmp_path, capsys):
    config = tmp_path / "nano.toml"
    config.write_text(DEBUG_CONFIG.read_text().replace('flavor = "debug"', 'flavor = "nano"'))
    rc, err = _export(capsys, step20, "--out", occupied, "--config", config, "--force")
    assert rc == 2
    assert "tok_embeddings.weight is [4096, 256]" in err and "expects [128256, 768]" in err
    assert "fits flavor 'debug'" in err
    assert _snapshot(occupied) == {Path("keep.txt"): b"mine"}
    _no_leftovers(occupied)


@pytest.mark.parametrize(
    "where, message",
    [
        (lambda run: run / "checkpoint", "holds the checkpoints of steps 10, 20: add --step N or --step latest"),
        (lambda run: run / "nowhere", "does not exist"),
        (lambda run: run / "tb", "is not a DCP checkpoint"),
    ],
)
def test_bad_checkpoint_paths(debug_run, occupied, capsys, where, message):
    rc, err = _export(capsys, where(debug_run), "--out", occupied, "--config", DEBUG_CONFIG, "--force")
    assert rc == 2 and message in err
    assert _snapshot(occupied) == {Path("keep.txt"): b"mine"}


def test_unknown_step(debug_run, occupied, capsys):
    rc, err = _export(
        capsys, debug_run / "checkpoint", "--step", "15", "--out", occupied, "--config", DEBUG_CONFIG, "--force"
    )
    assert rc == 2 and "no checkpoint for step 15: it has steps 10, 20" in err


def test_failed_verification_leaves_out_untouched(step20, occupied, monkeypatch):
    """A wrong conversion (no q/k row reordering) is caught by the parity check; nothing is written."""
    from tinytitan.errors import TinytitanError
    from tinytitan.export import hf
    from tinytitan.export.pipeline import export

    real = hf.to_hf
    monkeypatch.setattr(hf, "to_hf", lambda name, tensor, args: (real(name, tensor, args)[0], tensor))
    with pytest.raises(TinytitanError, match="verification failed"):
        export(step20, occupied, config=DEBUG_CONFIG, force=True)
    assert _snapshot(occupied) == {Path("keep.txt"): b"mine"}
    _no_leftovers(occupied)


def test_tokenizer_is_required_for_hf_without_a_run_record(step20, tmp_path, capsys):
    bare = tmp_path / "checkpoint" / "step-20"  # the checkpoint without its run folder's run.toml
    shutil.copytree(step20, bare)
    rc, err = _export(capsys, bare, "--out", tmp_path / "x")
    assert rc == 2 and "no tokenizer folder" in err and "run record" in err and not (tmp_path / "x").exists()
    # without --config: the flavor comes from the shapes, the tokenizer from --tokenizer
    assert _export(capsys, bare, "--out", tmp_path / "y", "--tokenizer", TOKENIZER, "--no-verify")[0] == 0
    record = json.loads((tmp_path / "y" / "tinytitan.json").read_text())
    assert record["flavor"] == "debug" and record["trained"] is None and record["run_record"] is None
    assert "| Training sequence length | unknown |" in (tmp_path / "y" / "README.md").read_text()


@pytest.mark.parametrize("target", ["run folder", "step folder", "checkpoint folder", "tokenizer folder"])
def test_force_never_writes_over_an_input(debug_run, tmp_path, capsys, target):
    """--out = the run, the step being read, the checkpoint folder or the tokenizer: refused even with --force,
    every file byte-identical afterwards (a forced export into the run folder once deleted the whole run)."""
    run, tokenizer = tmp_path / "run", tmp_path / "tokenizer"
    shutil.copytree(debug_run, run)
    shutil.copytree(TOKENIZER, tokenizer)
    step = run / "checkpoint" / "step-20"
    out = {"run folder": run, "step folder": step, "checkpoint folder": run / "checkpoint",
           "tokenizer folder": tokenizer}[target]  # fmt: skip
    before = _snapshot(tmp_path)
    rc, err = _export(capsys, step, "--out", out, "--config", DEBUG_CONFIG, "--tokenizer", tokenizer, "--force")
    assert rc == 2 and "overlaps" in err and "even with --force" in err and err.count("\n") == 1, err
    assert _snapshot(tmp_path) == before

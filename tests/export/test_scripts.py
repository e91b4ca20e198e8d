"""The numbered util scripts (the old three-step route) on the session's debug run: checkpoint ->
Meta weights -> verified HF folder -> push --dry-run, every parameter an argument."""

from __future__ import annotations

import importlib.util
import json

import torch

from tests.helpers import DEBUG_CONFIG, REPO
from tinytitan.checkpoint.reader import open_checkpoint


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), REPO / "util" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_three_steps(debug_run, tmp_path, capsys):
    step20 = debug_run / "checkpoint" / "step-20"
    meta, hf = tmp_path / "meta", tmp_path / "hf"
    assert (
        _script("1-convert_ckpt_to_llama_weights")([str(step20), "--out", str(meta), "--config", str(DEBUG_CONFIG)])
        == 0
    )
    assert sorted(p.name for p in meta.iterdir()) == ["consolidated.00.pth", "params.json"]

    argv = ["--input_dir", str(meta), "--output_dir", str(hf), "--config", str(DEBUG_CONFIG)]
    assert _script("2-convert_llama_weights_to_hf")(argv) == 0
    record = json.loads((hf / "tinytitan.json").read_text())
    assert record["flavor"] == "debug" and record["verification"]["max_abs_diff"] <= 1e-4
    from safetensors import safe_open

    reference = dict(open_checkpoint(step20).iter_tensors())
    with safe_open(str(hf / "model.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("model.embed_tokens.weight"), reference["tok_embeddings.weight"])

    capsys.readouterr()
    assert _script("3-push_to_HF_hub")([str(hf), "--repo-id", "my-org/tiny-debug", "--dry-run"]) == 0
    assert "my-org/tiny-debug (private)" in capsys.readouterr().out
    assert _script("3-push_to_HF_hub")([str(hf), "--repo-id", "not a repo id", "--dry-run"]) == 2

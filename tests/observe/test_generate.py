"""Sampling from a CPU-trained checkpoint directly and from its HF export: the same tokens."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import DEBUG_CONFIG
from tinytitan.cli import main
from tinytitan.observe.generate import generate, pick, prompt_ids
from tinytitan.observe.loading import from_checkpoint, from_hf

PROMPT = "In the beginning"


@pytest.fixture(scope="module")
def titan(debug_checkpoint):
    return from_checkpoint(debug_checkpoint, DEBUG_CONFIG)


@pytest.fixture(scope="module")
def hf(debug_export):
    return from_hf(debug_export)


def test_pick_greedy_and_nucleus():
    logits = torch.tensor([0.0, 3.0, 2.9, -5.0])
    g = torch.Generator().manual_seed(0)
    assert pick(logits, 0.0, 1.0, g) == 1
    # top_p 0.5: only the most likely token survives
    assert {pick(logits, 1.0, 0.5, g) for _ in range(50)} == {1}
    # top_p 0.9 keeps the two near-equal tokens, never the unlikely ones
    assert {pick(logits, 1.0, 0.9, g) for _ in range(200)} == {1, 2}


def test_prompt_starts_with_bos_like_training_documents(titan):
    ids = prompt_ids(titan, PROMPT)
    assert ids[0] == titan.bos_id and titan.bos_id not in ids[1:]
    assert titan.decode(ids[1:]) == PROMPT


def test_greedy_checkpoint_equals_greedy_hf_export(titan, hf):
    ids = prompt_ids(titan, PROMPT)
    assert prompt_ids(hf, PROMPT) == ids  # the export ships the same tokenizer
    from_titan = generate(titan, ids, 24, temperature=0)
    from_hf_export = generate(hf, ids, 24, temperature=0)
    assert len(from_titan) > 0
    assert from_titan == from_hf_export


def test_seeded_sampling_agrees_and_repeats(titan, hf):
    ids = prompt_ids(titan, PROMPT)
    a = generate(titan, ids, 16, temperature=1.0, top_p=0.95, seed=7)
    assert a == generate(titan, ids, 16, temperature=1.0, top_p=0.95, seed=7)
    assert a == generate(hf, ids, 16, temperature=1.0, top_p=0.95, seed=7)


def test_full_logits_match_the_export(titan, hf):
    ids = torch.tensor([prompt_ids(titan, "def main():\n    return 0\n")])
    torch.testing.assert_close(titan.logits(ids)[0], hf.logits(ids)[0], atol=1e-4, rtol=0)


def test_generate_command_both_paths(debug_checkpoint, debug_export, capsys):
    common = ["--prompt", PROMPT, "--max-new-tokens", "12", "--temperature", "0", "--json"]
    assert main(["generate", "--checkpoint", str(debug_checkpoint), "--config", str(DEBUG_CONFIG), *common]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["generate", "--model", str(debug_export), *common]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["ids"] == b["ids"] and a["completion"] == b["completion"]
    assert 0 < len(a["ids"]) <= 12
    # the checkpoint folder (not a step folder) means its latest step; no --config: the run's run.toml
    assert main(["generate", "--checkpoint", str(debug_checkpoint.parent), *common]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ids"] == a["ids"] and json.loads(captured.out)["step"] == 20
    assert captured.err == f"generate: {debug_checkpoint} (debug), step 20\n"  # which step it loaded
    # plain text: the prompt and its continuation
    assert main(["generate", "--model", str(debug_export), "--prompt", PROMPT, "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith(PROMPT)


def test_generate_errors_are_one_line(tmp_path, capsys):
    bare = tmp_path / "checkpoint" / "step-20"  # a checkpoint without its run folder's record
    bare.mkdir(parents=True)
    assert main(["generate", "--checkpoint", str(bare), "--prompt", "x"]) == 2
    assert "pass --config TOML" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x"]) == 2
    assert "one of the arguments --checkpoint --model is required" in capsys.readouterr().err


def test_negative_temperature_is_refused_not_greedy(debug_checkpoint, capsys):
    args = ["generate", "--checkpoint", str(debug_checkpoint), "--config", str(DEBUG_CONFIG), "--prompt", "x"]
    assert main([*args, "--temperature", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--temperature -1.0 is negative" in err and err.count("\n") == 1


def test_a_huge_max_new_tokens_is_capped_at_the_context_with_one_line(debug_checkpoint, debug_export, tmp_path, capsys):
    """``--max-new-tokens 1000000000`` ran for minutes without a word; now it stops at the model's context:
    the seq_len it was trained on, from the config (a checkpoint) or ``tinytitan.json`` (an export)."""
    trained = json.loads((debug_export / "tinytitan.json").read_text())["seq_len"]
    assert trained == 256 < json.loads((debug_export / "config.json").read_text())["max_position_embeddings"]
    assert from_hf(debug_export).context == from_checkpoint(debug_checkpoint, DEBUG_CONFIG).context == 256
    capsys.readouterr()  # transformers' loading bar
    # 256 tokens take a minute on a loaded CPU: the same checkpoint under a config that says seq_len = 24.
    config = tmp_path / "short.toml"
    config.write_text(DEBUG_CONFIG.read_text().replace("seq_len = 256", "seq_len = 24", 1))
    command = ["generate", "--checkpoint", str(debug_checkpoint), "--config", str(config), "--prompt", PROMPT,
               "--temperature", "0"]  # fmt: skip
    assert main([*command, "--max-new-tokens", "1000000000", "--json"]) == 0
    out, err = capsys.readouterr()
    cap = ("tinytitan: --max-new-tokens 1000000000 is more than the model's context of 24 tokens (the sequence "
           "length it was trained on): generating at most 24")  # fmt: skip
    # Besides the cap: the run record's warning about the disagreeing --config, and the step loaded.
    lines = err.splitlines()
    assert lines.count(cap) == 1 and len(lines) == 3, lines
    assert lines[0].startswith("tinytitan: warning: --config") and "training.seq_len = 24" in lines[0]
    assert lines[1].startswith("generate: ") and lines[1].endswith("step 20")
    assert 0 < len(json.loads(out)["ids"]) <= 24  # and --json stays one JSON document
    assert main([*command, "--max-new-tokens", "6", "--json"]) == 0
    assert "--max-new-tokens" not in capsys.readouterr().err  # within the context: no line


def test_the_text_streams_as_it_is_sampled(titan, debug_export, capsys):
    from io import StringIO

    from tinytitan.observe.generate import TextStream

    out = StringIO()
    stream = TextStream(titan, out)
    seen: list[str] = []

    def on_token(token):
        stream.add(token)
        seen.append(out.getvalue())

    new = generate(titan, prompt_ids(titan, PROMPT), 24, temperature=0, on_token=on_token)
    stream.finish()
    text = titan.decode([t for t in new if t != titan.eos_id])
    assert out.getvalue() == text + "\n" and len(seen) == len(new)
    assert len(set(seen)) > 1 and all(text.startswith(s) for s in seen)  # written piece by piece, as it came
    command = ["generate", "--model", str(debug_export), "--prompt", PROMPT, "--temperature", "0", "--max-new-tokens"]
    assert main([*command, "8", "--json"]) == 0
    completion = json.loads(capsys.readouterr().out)["completion"]
    assert main([*command, "8"]) == 0
    assert capsys.readouterr().out == PROMPT + completion + "\n"

import json

import pytest
import torch
from torchtitan.models.llama3 import Transformer

from tinytitan import models
from tinytitan.cli import main as cli_main

# The table: flavor -> (dim, layers, heads, kv heads, FFN hidden)
EXPECTED = {
    "tiny": (2048, 22, 32, 4, 5632),
    "micro": (1024, 16, 16, 4, 2816),
    "nano": (768, 12, 12, 4, 2048),
}


@pytest.mark.parametrize("flavor", sorted(EXPECTED))
def test_ffn_hidden_that_torchtitan_derives_matches_the_table(flavor):
    dim, layers, heads, kv_heads, ffn = EXPECTED[flavor]
    args = models.flavor_args(flavor)
    with torch.device("meta"):
        model = Transformer(args)
    assert (args.dim, args.n_layers, args.n_heads, args.n_kv_heads) == (dim, layers, heads, kv_heads)
    assert model.layers["0"].feed_forward.w1.weight.shape == (ffn, dim)
    assert args.vocab_size == 128256 and args.rope_theta == 500000 and args.norm_eps == 1e-5


def test_debug_flavor_fits_the_embedded_tokenizer():
    from tokenizers import Tokenizer

    from tinytitan.tokenizer import EMBEDDED_TOKENIZER

    vocab = Tokenizer.from_file(str(EMBEDDED_TOKENIZER / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    assert models.FLAVORS["debug"].vocab_size == vocab
    debug = models.summarize("debug")
    assert debug.dim == 256 and 4 <= debug.n_layers <= 6 and debug.n_heads == 8 and debug.n_kv_heads == 4


def test_tiny_has_tinyllama_body_and_untied_embeddings():
    s = models.summarize("tiny")
    # TinyLlama's 1.1B counts 2 x 32000 x 2048 embedding parameters; with the Llama 3 vocab the body is the same.
    assert s.non_embedding_params == s.total_params - 2 * 128256 * 2048
    assert 0.96e9 < s.non_embedding_params < 0.98e9
    assert s.flops_per_token > 6 * (s.total_params - 128256 * 2048)


def test_models_json_lists_every_flavor_with_rebuildable_args(capsys):
    assert cli_main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["flavor"] for r in rows] == list(models.FLAVORS)
    for row in rows:  # torchtitan's own dataclasses rebuild each flavor from the JSON alone
        flavor = models.FLAVORS[row["flavor"]]
        rope = type(flavor.rope_scaling_args)(**row["args"]["rope_scaling_args"])
        assert type(flavor)(**{**row["args"], "rope_scaling_args": rope}) == flavor
        for key in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "vocab_size", "total_params",
                    "non_embedding_params", "flops_per_token"):  # fmt: skip
            assert row[key] > 0


def test_models_table_has_a_row_per_flavor(capsys):
    assert cli_main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + len(models.FLAVORS)
    assert lines[1].split()[:7] == ["tiny", "2048", "22", "32", "4", "5632", "128256"]


def test_unknown_flavor_names_the_choices():
    with pytest.raises(KeyError, match="tiny, micro, nano, debug"):
        models.flavor_args("huge")


@pytest.mark.parametrize("flavor", list(models.SHAPES))
def test_the_plain_numbers_are_what_torchtitan_builds(flavor):
    """``SHAPES`` and what is computed from them (tensor shapes, parameters, FLOPs) against torchtitan's model:
    the listing that needs no torch cannot drift from what trains."""
    args = models.flavor_args(flavor)
    assert args == models.FLAVORS[flavor] and args is not models.FLAVORS[flavor]
    with torch.device("meta"):
        model = Transformer(args)
    assert models.state_shapes(flavor) == [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    total, flops = args.get_nparams_and_flops(model, 2048)
    s = models.summarize(flavor, 2048)
    assert (s.total_params, s.flops_per_token) == (total, flops)
    assert s.non_embedding_params == total - model.tok_embeddings.weight.numel() - model.output.weight.numel()
    assert s.ffn_hidden == model.layers["0"].feed_forward.w1.weight.shape[0]
    assert models.summarize(flavor, with_args=False).args == {} and s.args == models.args_to_dict(args)

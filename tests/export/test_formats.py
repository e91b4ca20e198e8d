"""The pieces of an export, without a training run: safetensors streaming, names and q/k rows,
config.json as transformers reads it, and flavors found from shapes."""

from __future__ import annotations

import json

import pytest
import torch

from tinytitan.checkpoint.flavors import fitting_flavor, flavor_shapes
from tinytitan.export.hf import from_hf, hf_config, hf_name, to_hf
from tinytitan.export.safetensors_io import Planned, weight_files, write_safetensors
from tinytitan.models import FLAVORS, flavor_args


def test_safetensors_stream_roundtrip_and_shards(tmp_path):
    from safetensors.torch import load_file

    state = {"a": torch.randn(3, 5), "b": torch.randn(7).bfloat16(), "c": torch.randn(2, 2, 3), "d": torch.randn(1)}
    items = [Planned(k, tuple(v.shape), v.dtype) for k, v in state.items()]
    (tmp_path / "one").mkdir()
    write_safetensors(tmp_path / "one", items, state.__getitem__)
    assert all(torch.equal(load_file(tmp_path / "one" / "model.safetensors")[k], v) for k, v in state.items())

    (tmp_path / "sharded").mkdir()
    written = write_safetensors(tmp_path / "sharded", items, state.__getitem__, max_shard_bytes=64)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(i.nbytes for i in items)
    assert len(written) == 4 and set(weight_files(tmp_path / "sharded")) == set(state)
    loaded = {k: v for f in written if f.suffix == ".safetensors" for k, v in load_file(f).items()}
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_tensor_by_tensor_equals_the_adapter_on_the_whole_state():
    """The export feeds torchtitan's Llama3StateDictAdapter one tensor at a time; that must equal the whole-dict call."""
    from torchtitan.models.llama3.model.state_dict_adapter import Llama3StateDictAdapter

    args = flavor_args("debug")
    state = {name: torch.randn(shape) for name, shape in flavor_shapes("debug")}
    whole = Llama3StateDictAdapter(args, None).to_hf(dict(state))
    one_by_one = dict(to_hf(k, v, args) for k, v in state.items())
    assert one_by_one.keys() == whole.keys()
    assert all(torch.equal(one_by_one[k], whole[k]) for k in whole)
    assert {hf_name(k, v.shape, args) for k, v in state.items()} == whole.keys()
    back = dict(from_hf(k, v, args) for k, v in one_by_one.items())
    assert all(torch.equal(back[k], state[k]) for k in state)
    q = "layers.0.attention.wq.weight"
    assert not torch.equal(one_by_one["model.layers.0.self_attn.q_proj.weight"], state[q])  # rows were reordered


def test_config_reads_back_with_the_rope_scaling(tmp_path):
    from transformers import AutoConfig

    args = flavor_args("tiny")
    (tmp_path / "config.json").write_text(
        json.dumps(hf_config(args, bos_id=128000, eos_id=128001, dtype=torch.bfloat16))
    )
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.rope_parameters == {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    }  # fmt: skip
    assert (config.hidden_size, config.intermediate_size, config.num_key_value_heads) == (2048, 5632, 4)
    assert config.max_position_embeddings > 8192 and config.tie_word_embeddings is False


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_each_flavor_is_found_from_its_shapes(flavor):
    assert fitting_flavor(dict(flavor_shapes(flavor))) == flavor

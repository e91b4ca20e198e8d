"""The Hugging Face ``LlamaForCausalLM`` format: names, the q/k row order, config.json.

Names and rows come from torchtitan's ``Llama3StateDictAdapter``, applied tensor by tensor.
Two things differ from torchtitan beyond the names:

* RoPE layout. torchtitan rotates adjacent pairs of a head's dimensions (it
  views them as complex numbers); transformers' ``rotate_half`` pairs dimension
  ``i`` with ``i + head_dim/2``. Reordering the rows of ``wq`` and ``wk`` within
  each head (evens first, then odds) makes the two compute the same thing.
* RoPE scaling. torchtitan's llama3 model always applies Llama-3.1 scaling
  (factor 8, low 1, high 4, original context 8192). A config.json without the
  matching ``rope_parameters`` loads fine and gives different logits, so the
  config is derived from the flavor's args, never written by hand.

``max_position_embeddings`` is ``original_max_position_embeddings * factor``
(65536), the context the scaling is designed for. transformers warns when it is
not larger than the original context, and the RoPE frequencies do not depend on
it, so logits are the same whatever it is; the trained sequence length is
stated in the model card and ``tinytitan.json``.
"""

from __future__ import annotations

import torch

HF_ARCHITECTURE = "LlamaForCausalLM"


def _adapter(args):
    """torchtitan's own HF converter for llama3 (the one its TrainSpec uses for HF checkpoints)."""
    from torchtitan.models.llama3.model.state_dict_adapter import Llama3StateDictAdapter

    return Llama3StateDictAdapter(args, None)


def to_hf(name: str, tensor: torch.Tensor, args) -> tuple[str, torch.Tensor]:
    """One torchtitan tensor -> (transformers name, tensor with q/k rows reordered), via the adapter.

    The adapter converts whole state dicts; handing it one tensor at a time keeps the export's
    memory at a tensor or two.
    """
    ((hf_key, value),) = _adapter(args).to_hf({name: tensor}).items()
    return hf_key, value


def from_hf(hf_key: str, tensor: torch.Tensor, args) -> tuple[str, torch.Tensor]:
    """Inverse of ``to_hf``: (torchtitan name, tensor in torchtitan's row order)."""
    try:
        converted = _adapter(args).from_hf({hf_key: tensor})
    except KeyError:
        raise KeyError(f"tensor {hf_key} is not part of a Llama model") from None
    ((name, value),) = converted.items()
    return name, value


def hf_name(name: str, shape: tuple[int, ...], args) -> str:
    """The transformers name of a torchtitan tensor (no data is touched: a meta tensor goes through)."""
    return to_hf(name, torch.empty(shape, device="meta"), args)[0]


def ffn_hidden(args) -> int:
    """The FFN width torchtitan builds (its FeedForward rounds 2/3 * 4 * dim up to multiple_of)."""
    hidden = int(2 * 4 * args.dim / 3)
    if args.ffn_dim_multiplier is not None:
        hidden = int(args.ffn_dim_multiplier * hidden)
    return args.multiple_of * ((hidden + args.multiple_of - 1) // args.multiple_of)


def rope_parameters(args) -> dict:
    scaling = args.rope_scaling_args
    return {
        "rope_type": "llama3",
        "rope_theta": float(args.rope_theta),
        "factor": float(scaling.scaling_factor),
        "low_freq_factor": float(scaling.low_freq_factor),
        "high_freq_factor": float(scaling.high_freq_factor),
        "original_max_position_embeddings": int(scaling.original_max_position_embeddings),
    }


def hf_config(args, *, bos_id: int | None, eos_id: int | None, dtype: torch.dtype) -> dict:
    """config.json for ``LlamaForCausalLM``, every value derived from the flavor's args.

    RoPE is written twice: ``rope_parameters`` (transformers >= 5) and
    ``rope_scaling`` + ``rope_theta`` (transformers 4.x and tools that read it,
    such as vLLM), so no reader falls back to unscaled RoPE.
    """
    import transformers

    rope = rope_parameters(args)
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "architectures": [HF_ARCHITECTURE],
        "model_type": "llama",
        "vocab_size": args.vocab_size,
        "hidden_size": args.dim,
        "intermediate_size": ffn_hidden(args),
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads or args.n_heads,
        "head_dim": args.dim // args.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": int(rope["original_max_position_embeddings"] * rope["factor"]),
        "rms_norm_eps": float(args.norm_eps),
        "rope_parameters": rope,
        "rope_theta": rope["rope_theta"],
        "rope_scaling": {k: v for k, v in rope.items() if k != "rope_theta"},
        "tie_word_embeddings": False,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "dtype": dtype_name,
        "torch_dtype": dtype_name,
        "transformers_version": transformers.__version__,
    }


def generation_config(*, bos_id: int | None, eos_id: int | None) -> dict:
    import transformers

    return {"bos_token_id": bos_id, "eos_token_id": eos_id, "transformers_version": transformers.__version__}

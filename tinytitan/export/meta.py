"""Meta's original Llama format: ``consolidated.00.pth`` + ``params.json``.

torchtitan's llama3 model is Meta's reference model, so tensor names and the
RoPE row order are already Meta's: the weights are written unchanged (cast to
the export dtype). ``use_scaled_rope: true`` is Meta's switch for exactly the
Llama-3.1 scaling torchtitan applies (factor 8, low 1, high 4, original 8192);
a flavor with other scaling factors cannot be expressed in this format.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from tinytitan.errors import TinytitanError
from tinytitan.export.source import META_PARAMS, META_WEIGHTS

META_ROPE_SCALING = {
    "scaling_factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def params_json(args) -> dict:
    """params.json as Meta's llama-models and transformers' conversion script read it."""
    scaling = args.rope_scaling_args
    actual = {k: getattr(scaling, k) for k in META_ROPE_SCALING}
    if actual != META_ROPE_SCALING:
        raise TinytitanError(
            f"the Meta format only knows Llama-3.1 RoPE scaling {META_ROPE_SCALING}; this flavor uses {actual}"
        )
    params = {
        "dim": args.dim,
        "n_layers": args.n_layers,
        "n_heads": args.n_heads,
        "n_kv_heads": args.n_kv_heads or args.n_heads,
        "vocab_size": args.vocab_size,
        "multiple_of": args.multiple_of,
        "norm_eps": float(args.norm_eps),
        "rope_theta": float(args.rope_theta),
        "use_scaled_rope": True,
    }
    if args.ffn_dim_multiplier is not None:
        params["ffn_dim_multiplier"] = args.ffn_dim_multiplier
    return params


def write_meta(
    folder: Path,
    source,
    args,
    dtype: torch.dtype,
    tokenizer=None,
    on_tensor: Callable[[str], None] | None = None,
) -> list[Path]:
    """Writes the Meta files into ``folder`` (which must exist); returns their paths.

    ``torch.save`` needs the whole dict, so this holds the exported weights once
    (in the export dtype) -- never the optimizer state.
    """
    state = {}
    for name in source.names():
        state[name] = source.load(name, dtype).contiguous()
        if on_tensor:
            on_tensor(name)
    written = [folder / META_WEIGHTS, folder / META_PARAMS]
    torch.save(state, written[0])
    del state
    written[1].write_text(json.dumps(params_json(args), indent=2) + "\n")
    if tokenizer is not None and tokenizer.sentencepiece is not None:
        written.append(Path(shutil.copy2(tokenizer.sentencepiece, folder / "tokenizer.model")))
    return written

"""``[model] attn_type = "flex"`` where FlexAttention cannot train: on the CPU.

FlexAttention has no backward pass on the CPU (torch raises ``NotImplementedError`` at the first
step), so on a CPU rank the same mask is computed exactly and handed to SDPA as a boolean tensor:

* ``masks(tokens, eos_id, mask_type)`` builds the allowed ``[batch, 1, seq, seq]`` matrix from the EOS
  positions: a token attends to itself and the earlier tokens of its own document (``block_causal``;
  a document runs up to and including its EOS, the token after an EOS starts the next one), or to every
  earlier token (``causal``). It is wrapped in a one-block ``BlockMask`` because torchtitan's attention
  layer accepts only that for ``attn_type = "flex"`` (and the trainer hands it to every layer).
* ``DenseMaskAttention`` replaces each layer's ``FlexAttentionWrapper``: same call, SDPA with that matrix.

Which path a model takes is ``ModelArgs.dense_mask`` (``tinytitan.rank.spec``): true on a CPU rank with
``attn_type = "flex"``, false with an accelerator, where torchtitan's compiled FlexAttention runs.
Memory: one ``[batch, seq, seq]`` boolean per step, shared by all layers (256 KiB for 4 x 256 tokens).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask


def document_ids(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """``[batch, seq]``: the number of EOS tokens strictly before each position (its document's index)."""
    ends = (tokens == eos_id).to(torch.int32)
    return torch.cumsum(ends, dim=1) - ends


def allowed(tokens: torch.Tensor, eos_id: int, mask_type: str) -> torch.Tensor:
    """``[batch or 1, 1, seq, seq]`` booleans: True where query i may attend to key j."""
    seq = tokens.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=tokens.device).tril()
    if mask_type == "causal":
        return causal[None, None]
    if mask_type != "block_causal":
        raise ValueError(f"unknown attention mask type {mask_type!r}")
    docs = document_ids(tokens, eos_id)
    return ((docs[:, :, None] == docs[:, None, :]) & causal)[:, None]


class DenseMask:
    """A BlockMask's ``mask_mod`` that looks the answer up in the dense matrix it carries."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    def __call__(self, b, h, q_idx, kv_idx):
        return self.matrix[b if self.matrix.shape[0] > 1 else 0, 0, q_idx, kv_idx]


def masks(tokens: torch.Tensor, eos_id: int, mask_type: str) -> BlockMask:
    """The attention masks of one batch, as torchtitan's attention layers take them (see the module doc)."""
    matrix = allowed(tokens, eos_id, mask_type)
    batch, seq = matrix.shape[0], tokens.shape[1]
    one = torch.ones(batch, 1, 1, dtype=torch.int32, device=tokens.device)
    first = torch.zeros(batch, 1, 1, 1, dtype=torch.int32, device=tokens.device)
    return BlockMask.from_kv_blocks(
        one, first, BLOCK_SIZE=seq, mask_mod=DenseMask(matrix), seq_lengths=(seq, seq), compute_q_blocks=False
    )


class DenseMaskAttention(nn.Module):
    """SDPA with the BlockMask's dense matrix: FlexAttentionWrapper's call, exact, with a CPU backward."""

    def forward(self, q, k, v, *, score_mod=None, block_mask=None, scale=None, return_lse=False, enable_gqa=False):
        matrix = getattr(getattr(block_mask, "mask_mod", None), "matrix", None)
        if matrix is None or score_mod is not None or return_lse:
            raise RuntimeError("DenseMaskAttention takes the masks of tinytitan.rank.attention.masks only")
        return F.scaled_dot_product_attention(q, k, v, attn_mask=matrix, scale=scale, enable_gqa=enable_gqa)


def use_dense_masks(model: nn.Module) -> int:
    """Swaps every layer's FlexAttention for ``DenseMaskAttention``; returns how many it swapped."""
    swapped = 0
    for module in model.modules():
        if getattr(module, "attn_type", None) == "flex" and hasattr(module, "inner_attention"):
            module.inner_attention = DenseMaskAttention()
            swapped += 1
    return swapped

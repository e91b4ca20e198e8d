"""Per-layer training health every ``[guard] stats_freq`` steps: gradient norm, weight norm, update-to-weight ratio.

A layer is a transformer block (``layers.3``) or a top-level module (``tok_embeddings``, ``norm``,
``output``). On a stats step, before the optimizer step: each rank sums the squares of its
shards of every gradient and weight and keeps a copy of its weight shards; after it, the squares
of the change. One all-reduce over the shard dimensions sums every number at once. Gradients are
reported before clipping (the clipped ones divided by the clipping factor), so they add up to the
gradient norm torchtitan logs. Cost: one copy of this rank's weight shards while the optimizer
steps, on stats steps only.
"""

from __future__ import annotations

import math
import re

import torch
import torch.distributed as dist

_BLOCK = re.compile(r"^(layers\.\d+)\.")


def layer_of(name: str) -> str:
    """``layers.3.attention.wq.weight`` -> ``layers.3``; ``tok_embeddings.weight`` -> ``tok_embeddings``."""
    name = name.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", "")
    match = _BLOCK.match(name)
    return match.group(1) if match else name.split(".")[0]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _shard_groups(param) -> list:
    """The process groups over which this parameter is sharded (none for a plain tensor)."""
    mesh = getattr(param, "device_mesh", None)
    if mesh is None:
        return []
    return [mesh.get_group(dim) for dim, p in enumerate(param.placements) if p.is_shard()]


class LayerStats:
    def __init__(self, model_parts, freq: int):
        self.freq = freq
        self.params = [(layer_of(n), p) for m in model_parts for n, p in m.named_parameters() if p.requires_grad]
        self.layers = list(dict.fromkeys(layer for layer, _ in self.params))
        self._before: list[torch.Tensor] | None = None
        self._sums: torch.Tensor | None = None

    def due(self, step: int) -> bool:
        return self.freq > 0 and step % self.freq == 0

    def before_update(self) -> None:
        locals_ = [_local(p.detach()) for _, p in self.params]
        grads = [_local(p.grad.detach()) if p.grad is not None else torch.zeros_like(w) for (_, p), w in
                 zip(self.params, locals_, strict=True)]  # fmt: skip
        self._sums = torch.stack([torch.stack([g.float().pow(2).sum() for g in grads]),
                                  torch.stack([w.float().pow(2).sum() for w in locals_])])  # fmt: skip
        self._before = [w.clone() for w in locals_]

    def after_update(self, grad_norm: float, max_norm: float) -> dict[str, float]:
        if self._before is None or self._sums is None:
            return {}
        now = [_local(p.detach()) for _, p in self.params]
        updates = torch.stack([(w.float() - b.float()).pow(2).sum() for w, b in zip(now, self._before, strict=True)])
        sums = torch.cat([self._sums, updates[None]])  # [3, params]: grad², weight², update²
        self._before = self._sums = None
        groups = _shard_groups(self.params[0][1]) if self.params else []
        for group in groups:  # FSDP: every parameter is sharded over the same mesh dimensions
            dist.all_reduce(sums, group=group)
        clip = min(1.0, max_norm / (grad_norm + 1e-6)) if math.isfinite(grad_norm) else 1.0
        per_layer: dict[str, list[float]] = {layer: [0.0, 0.0, 0.0] for layer in self.layers}
        for (layer, _), column in zip(self.params, sums.t().tolist(), strict=True):
            for i in range(3):
                per_layer[layer][i] += column[i]
        out = {}
        for layer, (g2, w2, u2) in per_layer.items():
            weight = math.sqrt(w2)
            out[f"health/grad_norm/{layer}"] = math.sqrt(g2) / clip
            out[f"health/weight_norm/{layer}"] = weight
            out[f"health/update_ratio/{layer}"] = math.sqrt(u2) / weight if weight else 0.0
        return out

"""Muon for the hidden matrices, AdamW for the rest: ``[optimizer] name = "Muon"`` (docs/recipes.md).

``build_optimizers`` is the TrainSpec's ``build_optimizers_fn``: torchtitan's own for "AdamW"/"Adam",
and for "Muon" a ``MuonContainer`` (torchtitan's ``OptimizersContainer``: the same ``state_dict``
through DCP's ``get_optimizer_state_dict``, so checkpoints, resume and resharding work as with AdamW).

One ``MuonAdamW`` optimizer per model part, in four parameter groups chosen by parameter name
(``assign_groups``): "muon" (every 2-D weight matched by ``[optimizer] muon_params``: attention
wq/wk/wv/wo and MLP w1/w2/w3), "embed" (``tok_embeddings``), "output" (the output projection) and
"adamw" (the norms), each with its own LR.

Under FSDP each rank holds a row shard (a DTensor) of each matrix and its gradient. The momentum
stays sharded. Each matrix has an owner rank (matrices dealt round-robin): the ranks send it their rows
of the update (a gather), the owner orthogonalizes the whole matrix and sends each rank its rows back
(a scatter). Each matrix's Newton-Schulz runs once, on one rank, the same function of the same whole
matrix whatever the number of ranks (the reasons, and the cost, in docs/recipes.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.tensor import DTensor, Replicate, Shard
from torchtitan.components.optimizer import OptimizersContainer
from torchtitan.components.optimizer import build_optimizers as build_titan_optimizers

from tinytitan.errors import TinytitanError
from tinytitan.models import DEFAULT_MUON_PARAMS, assign_groups  # noqa: F401 (re-exported)

# The quintic Newton-Schulz iteration's coefficients (Keller Jordan's Muon): they push every singular
# value of the normalized matrix towards ~1 in a few steps, without converging exactly.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
GROUPS = ("muon", "embed", "output", "adamw")


def group_lrs(cfg) -> dict[str, float]:
    """Each group's peak LR: ``lr`` for Muon, ``adamw_lr`` for the rest unless ``embed_lr``/``output_lr`` are set."""
    return {"muon": cfg.lr, "embed": cfg.embed_lr or cfg.adamw_lr, "output": cfg.output_lr or cfg.adamw_lr,
            "adamw": cfg.adamw_lr}  # fmt: skip


def newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    """An approximately orthogonal matrix with g's singular vectors (U V^T of g = U S V^T), in g's dtype.

    float32 on CPU (bfloat16 matmuls are ~9x slower there), bfloat16 on GPUs.
    """
    a, b, c = NS_COEFFS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(0) > x.size(1)
    if tall:  # X X^T on the short side
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x.T if tall else x).to(g.dtype)


def orthogonalize(update: torch.Tensor, steps: int) -> torch.Tensor:
    """``newton_schulz`` of a whole matrix; a DTensor is gathered whole on every rank, each keeps its own part."""
    if not isinstance(update, DTensor):
        return newton_schulz(update, steps)
    whole = newton_schulz(update.full_tensor(), steps)
    mesh = update.device_mesh
    replicated = DTensor.from_local(whole, mesh, [Replicate()] * mesh.ndim, run_check=False)
    return replicated.redistribute(mesh, update.placements)  # Replicate -> Shard: a local slice, no traffic


def _row_sharded(update: torch.Tensor) -> bool:
    """FSDP's layout: a DTensor on a 1-D mesh, rows sharded (Shard(0): rank r holds rows from r * ceil(n/W))."""
    return isinstance(update, DTensor) and update.device_mesh.ndim == 1 and tuple(update.placements) == (Shard(0),)


def orthogonalize_all(updates: list[torch.Tensor], steps: int) -> list[torch.Tensor]:
    """``orthogonalize`` of every update, row-sharded matrices split over their mesh's ranks.

    Matrix i is owned by rank i % W: every rank sends it its rows (padded to ceil(n/W)), the owner runs
    Newton-Schulz on the whole matrix, and every rank gets its rows back. The gathers of all matrices are
    issued before any wait, then the scatters, so the transfers overlap each other and the owners' work.
    Other layouts (a 2-D mesh, a replicated DTensor, a plain tensor) take ``orthogonalize``.
    """
    split = [i for i, u in enumerate(updates) if _row_sharded(u) and u.device_mesh.size() > 1]
    results: list[torch.Tensor | None] = [orthogonalize(u, steps) if i not in split else None
                                          for i, u in enumerate(updates)]  # fmt: skip
    if not split:
        return results
    mesh = updates[split[0]].device_mesh
    group, world, me = mesh.get_group(), mesh.size(), mesh.get_local_rank()
    gathers = []  # (owner, work, this rank's padded rows, the owner's receive buffers)
    for k, i in enumerate(split):
        u, owner = updates[i], k % world
        if u.device_mesh != mesh:
            raise TinytitanError("Muon: the hidden matrices are sharded over different meshes; set dp_shard alone")
        local = u.to_local()
        send = local.new_zeros((-(-u.shape[0] // world), u.shape[1]))  # ceil(rows / W) rows
        send[: local.size(0)] = local
        receive = [torch.empty_like(send) for _ in range(world)] if me == owner else None
        gathers.append((owner, dist.gather(send, receive, group=group, group_dst=owner, async_op=True), send, receive))
    scatters = []  # (work, this rank's padded rows of the result)
    for i, (owner, work, send, receive) in zip(split, gathers, strict=True):
        work.wait()
        rows = updates[i].shape[0]
        pieces = None
        if receive is not None:
            whole = newton_schulz(torch.cat(receive)[:rows], steps)
            padded = whole.new_zeros((send.size(0) * world, whole.size(1)))
            padded[:rows] = whole
            pieces = list(padded.chunk(world))
        mine = torch.empty_like(send)
        scatters.append((dist.scatter(mine, pieces, group=group, group_src=owner, async_op=True), mine))
    for i, (work, mine) in zip(split, scatters, strict=True):
        work.wait()
        u = updates[i]
        results[i] = DTensor.from_local(mine[: u.to_local().size(0)], mesh, u.placements, run_check=False,
                                        shape=u.shape, stride=u.stride())  # fmt: skip
    return results


class MuonAdamW(torch.optim.Optimizer):
    """Muon (momentum, then Newton-Schulz orthogonalization) on groups with ``muon=True``, AdamW on the others.

    Decoupled weight decay on every group, scaled by its LR, as torch's AdamW. A Muon update is scaled by
    sqrt(max(1, rows/cols)) so that tall and wide matrices move alike.
    """

    def __init__(self, groups: list[dict], *, momentum: float, nesterov: bool, ns_steps: int, betas, eps: float,
                 weight_decay: float):  # fmt: skip
        defaults = dict(lr=1e-3, muon=False, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        betas=tuple(betas), eps=eps, weight_decay=weight_decay)  # fmt: skip
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (self._muon if group["muon"] else self._adamw)(group)
        return loss

    def _muon(self, group: dict) -> None:
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        params, updates = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = state["momentum_buffer"]
            buf.mul_(momentum).add_(p.grad)
            params.append(p)
            updates.append(p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf)
        for p, orthogonal in zip(params, orthogonalize_all(updates, group["ns_steps"]), strict=True):
            rows, cols = p.shape
            p.mul_(1 - lr * wd)
            p.add_(orthogonal, alpha=-lr * math.sqrt(max(1.0, rows / cols)))

    def _adamw(self, group: dict) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad, state = p.grad, self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step = state["step"].item()
            p.mul_(1 - lr * wd)
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
            p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**step))


def muon_settings(cfg) -> dict[str, Any]:
    return dict(momentum=cfg.momentum, nesterov=cfg.nesterov, ns_steps=cfg.ns_steps, betas=(cfg.beta1, cfg.beta2),
                eps=cfg.eps, weight_decay=cfg.weight_decay)  # fmt: skip


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """The four groups of one model part (empty groups left out), each with its LR."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    roles = assign_groups([(name, tuple(p.shape)) for name, p in named], list(cfg.muon_params))
    lrs = group_lrs(cfg)
    groups = []
    for role in GROUPS:
        params = [p for name, p in named if roles[name] == role]
        if params:
            groups.append({"params": params, "lr": lrs[role], "muon": role == "muon"})
    return groups


class MuonContainer(OptimizersContainer):
    """torchtitan's container (one optimizer per model part; its DCP state_dict) over ``MuonAdamW``."""

    def __init__(self, model_parts: list[nn.Module], cfg) -> None:
        settings = muon_settings(cfg)
        self.model_parts = model_parts
        self.optimizers = [MuonAdamW(param_groups(model, cfg), **settings) for model in model_parts]
        all_params = [p for model in model_parts for p in model.parameters() if p.requires_grad]
        torch.optim.Optimizer.__init__(self, all_params, {"lr": cfg.lr, **settings})


def build_optimizers(model_parts, optimizer_config, parallel_dims, ft_manager=None):
    """The TrainSpec's ``build_optimizers_fn``: Muon here, the rest torchtitan's."""
    if optimizer_config.name != "Muon":
        return build_titan_optimizers(model_parts, optimizer_config, parallel_dims, ft_manager)
    if optimizer_config.early_step_in_backward or (ft_manager is not None and ft_manager.enabled):
        raise TinytitanError(
            '[optimizer] name = "Muon" steps after the backward on whole matrices: set early_step_in_backward = false '
            "and turn torchft off"
        )
    return MuonContainer(model_parts, optimizer_config)

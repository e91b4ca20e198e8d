"""The output projection and its cross-entropy, chunk by chunk: ``[loss] kind = "chunked"``.

Why: with the 128,256-token Llama 3 vocabulary, torchtitan's plain loss holds the full
``[tokens x vocab]`` logits (bf16), an fp32 copy and the fp32 log-softmax for the backward
pass, then as many bytes again in gradients: ~3.4 GiB per 2048-token sequence in eager mode,
the same for every flavor, and more than Nano's whole model. Here the projection, the summed
cross-entropy and both gradients (of the hidden states ``h`` and of the weight ``W``) are
computed in chunks of ``chunk_tokens`` tokens during the forward pass, so at most one chunk's
``[chunk x vocab]`` logits exist at a time; the backward pass only scales the stored gradients
by the incoming gradient (the trainer's 1 / global valid tokens). FLOPs are the plain path's:
three matmuls per chunk (logits, dh, dW), none recomputed.

How it plugs into torchtitan (hooks only, nothing copied):

* ``TrainSpec.model_cls = TinyTransformer``: torchtitan's Llama 3 ``Transformer`` whose forward
  also takes ``labels=``; with labels it returns the summed loss (a 0-dim fp32 tensor) instead
  of logits. Without labels it is torchtitan's forward, unchanged (in-loop eval, generation).
* ``attach`` (from the spec's ``parallelize_fn``, before FSDP) swaps ``model.output`` for a
  ``ChunkedOutput`` that keeps the same ``weight`` Parameter: checkpoints keep ``output.weight``.
  FSDP unshards that weight only inside ``output``'s own forward (torchtitan shards norm and
  output as one unit), so the chunked projection runs there.
* ``TrainSpec.build_loss_fn = build_loss``: with kind "chunked" the loss passes the model's sum
  through; the trainer and the validator hand the model the labels (``model_inputs``).

The loss is a SUM over valid tokens (``ignore_index`` -100 skipped), as torchtitan's is:
the trainer divides by the global count of valid tokens, across gradient-accumulation steps.
Pipeline, tensor and context parallelism are refused with this loss (``tinytitan.job_config.validate_loss``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchtitan.components.loss import IGNORE_INDEX, build_cross_entropy_loss
from torchtitan.models.llama3 import Transformer
from torchtitan.tools.logging import logger

from tinytitan.errors import TinytitanError
from tinytitan.job_config import validate_loss
from tinytitan.rank import attention

# ---------------------------------------------------------------- per-chunk kernels
# One chunk's logits in, its loss sum (and the gradient of that sum w.r.t. the logits) out; the
# softmax in fp32 whatever the logits' dtype. d(sum of -log softmax[label]) / d logits is
# softmax - one_hot(label), zero for ignored tokens. Two spellings of the same arithmetic:
#
# * eager (CPU, compile off): in place, so a chunk holds its logits plus one fp32 [chunk x vocab]
#   buffer (log_softmax's own dtype argument: no separate fp32 copy of bf16 logits; on CPU it is
#   also several times faster than logsumexp); the one-hot goes in by indexed assignment, whose
#   CUDA kernel is deterministic ([debug] deterministic refuses scatter_add_ on 2-D tensors);
# * compiled ([compile] components has "loss"): out of place and one-hot by comparison, so that
#   inductor makes it two row reductions and one elementwise pass that writes the gradient in the
#   logits' dtype: no fp32 [chunk x vocab] buffer at all.


def _targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = labels != IGNORE_INDEX
    return valid, torch.where(valid, labels, 0)


def chunk_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=1, dtype=torch.float32)
    valid, target = _targets(labels)
    return -torch.where(valid, logp.gather(1, target.unsqueeze(1)).squeeze(1), 0.0).sum()


def chunk_loss_sum_and_grad(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(logits, dim=1, dtype=torch.float32)
    valid, target = _targets(labels)
    rows = torch.arange(logp.shape[0], device=logp.device)
    loss = -torch.where(valid, logp[rows, target], 0.0).sum()
    grad = logp.exp_()
    grad[rows, target] = grad[rows, target] - valid.to(grad.dtype)
    grad.mul_(valid.unsqueeze(1))
    return loss, grad.to(logits.dtype)


def fused_chunk_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    x = logits.float()
    valid, target = _targets(labels)
    lse = torch.logsumexp(x, dim=1)
    return torch.where(valid, lse - x.gather(1, target.unsqueeze(1)).squeeze(1), 0.0).sum()


def fused_chunk_loss_sum_and_grad(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.float()
    valid, target = _targets(labels)
    lse = torch.logsumexp(x, dim=1, keepdim=True)
    loss = torch.where(valid, (lse - x.gather(1, target.unsqueeze(1))).squeeze(1), 0.0).sum()
    one_hot = torch.arange(x.shape[1], device=x.device) == target.unsqueeze(1)
    grad = (torch.exp(x - lse) - one_hot.to(x.dtype)) * valid.unsqueeze(1).to(x.dtype)
    return loss, grad.to(logits.dtype)


class Kernels:
    """The per-chunk functions: eager ones, or the fused spellings compiled when the config compiles the loss."""

    def __init__(self, compile_backend: str | None = None):
        if compile_backend is None:
            self.loss_sum, self.loss_sum_and_grad = chunk_loss_sum, chunk_loss_sum_and_grad
        else:
            # dynamic=False: a run sees two chunk lengths at most (full chunks and the last one)
            self.loss_sum = torch.compile(fused_chunk_loss_sum, backend=compile_backend, dynamic=False)
            self.loss_sum_and_grad = torch.compile(
                fused_chunk_loss_sum_and_grad, backend=compile_backend, dynamic=False
            )


EAGER = Kernels()


# ---------------------------------------------------------------- the chunked projection + loss


def _loss_and_grads(
    h: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk: int,
    kernel: Callable,
    need_h: bool,
    need_w: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Summed loss, d loss/d h ([N, D], h's dtype) and d loss/d W ([V, D], fp32 when accumulated)."""
    n = h.shape[0]
    loss = torch.zeros((), dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = None
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        h_c = h[start:end]
        part, g = kernel(h_c @ weight.t(), labels[start:end])  # the chunk's logits live only in this call
        loss += part
        if need_h:
            torch.mm(g, weight, out=grad_h[start:end])
        if need_w:
            if grad_w is None:
                grad_w = g.t() @ h_c
                if end < n and grad_w.dtype != torch.float32:
                    grad_w = grad_w.float()  # accumulate over chunks in fp32
            elif grad_w.dtype == g.dtype:
                grad_w.addmm_(g.t(), h_c)
            else:
                grad_w.add_(g.t() @ h_c)
        del g
    return loss, grad_h, grad_w


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum over valid tokens of cross_entropy(h @ W.T, labels); gradients made in forward, scaled in backward.

    The matmuls run in ``dtype`` (autocast's, when the caller runs under it: one GPU without FSDP
    trains with fp32 weights under bf16 autocast), with autocast off inside.
    """

    @staticmethod
    def forward(ctx, h, weight, labels, chunk: int, kernels: Kernels, dtype: torch.dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(h.device.type, enabled=False):
            loss, grad_h, grad_w = _loss_and_grads(
                h.to(dtype), weight.to(dtype), labels, chunk, kernels.loss_sum_and_grad, need_h, need_w
            )
        # Kept on ctx rather than saved: backward takes them over and scales them in place, so no
        # second [vocab x dim] buffer exists at the start of the backward pass, where memory peaks.
        ctx.grads = grad_h, grad_w
        ctx.dtypes = h.dtype, weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.grads is None:
            raise RuntimeError("the chunked cross-entropy supports one backward pass per forward (no retain_graph)")
        (grad_h, grad_w), ctx.grads = ctx.grads, None
        h_dtype, w_dtype = ctx.dtypes
        if grad_h is not None:
            grad_h = grad_h.mul_(grad_loss).to(h_dtype)
        if grad_w is not None:
            grad_w = grad_w.mul_(grad_loss).to(w_dtype)
        return grad_h, grad_w, None, None, None, None


def _compute_dtype(h: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device = h.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(h.dtype, weight.dtype)


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int, kernels: Kernels = EAGER
) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, labels, reduction="sum", ignore_index=-100)``, chunk by chunk.

    h: ``[..., D]``, weight: ``[V, D]``, labels: ``[...]``; the softmax in fp32. Under ``no_grad``
    (validation) only the loss is computed, in the same chunks.
    """
    h, labels = h.reshape(-1, h.shape[-1]), labels.reshape(-1)
    dtype = _compute_dtype(h, weight)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return ChunkedLinearCrossEntropy.apply(h, weight, labels, chunk_tokens, kernels, dtype)
    loss = torch.zeros((), dtype=torch.float32, device=h.device)
    with torch.autocast(h.device.type, enabled=False):
        h, weight = h.to(dtype), weight.to(dtype)
        for start in range(0, h.shape[0], chunk_tokens):
            end = start + chunk_tokens
            loss += kernels.loss_sum(h[start:end] @ weight.t(), labels[start:end])
    return loss


# ---------------------------------------------------------------- the model


class ChunkedOutput(nn.Module):
    """The output projection, holding torchtitan's ``output.weight`` Parameter ([vocab, dim]).

    ``forward(h)`` gives the logits (as ``nn.Linear`` does); ``forward(h, labels)`` the summed loss.
    """

    def __init__(self, weight: nn.Parameter, chunk_tokens: int, kernels: Kernels = EAGER):
        super().__init__()
        self.weight = weight
        self.chunk_tokens = chunk_tokens
        self.kernels = kernels

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            return F.linear(h, self.weight)
        return linear_cross_entropy(h, self.weight, labels, self.chunk_tokens, self.kernels)

    def extra_repr(self) -> str:
        vocab, dim = self.weight.shape
        return f"in_features={dim}, out_features={vocab}, chunk_tokens={self.chunk_tokens}"


class TinyTransformer(Transformer):
    """torchtitan's Llama 3 Transformer; ``forward(tokens, labels=labels)`` returns the summed loss
    when the output is a ``ChunkedOutput`` (``attach``). Same parameters, same names.

    With ``model_args.dense_mask`` (flex attention on a CPU rank) every layer's FlexAttention is SDPA with
    the exact dense mask, and ``get_attention_masks`` builds that mask (``tinytitan.rank.attention``)."""

    def __init__(self, model_args):
        super().__init__(model_args)
        if getattr(model_args, "dense_mask", False):
            attention.use_dense_masks(self)

    def get_attention_masks(self, input_batch, tokenizer, extra_inputs=None):
        if not getattr(self.model_args, "dense_mask", False):
            return super().get_attention_masks(input_batch, tokenizer, extra_inputs)
        return attention.masks(input_batch, tokenizer.eos_id, self.model_args.attn_mask_type)

    def forward(self, tokens, attention_masks=None, positions=None, labels=None):
        if labels is None:
            return super().forward(tokens, attention_masks=attention_masks, positions=positions)
        if not isinstance(self.output, ChunkedOutput):
            raise RuntimeError('labels reach the model only with [loss] kind = "chunked" (tinytitan.rank.loss.attach)')
        h = self.tok_embeddings(tokens)
        for layer in self.layers.values():
            h = layer(h, self.freqs_cis, attention_masks=attention_masks, positions=positions)
        return self.output(self.norm(h), labels)


def chunked(job_config) -> bool:
    return job_config.loss.kind == "chunked"


def attach(model: nn.Module, job_config) -> None:
    """Swaps ``model.output`` (an ``nn.Linear``) for a ``ChunkedOutput`` over the same weight, when configured.

    Runs in the spec's parallelize function: after torchtitan's model converters, before
    compile and FSDP (so FSDP shards and unshards the same Parameter inside the new module).
    """
    if not chunked(job_config):
        return
    validate_loss(job_config)  # the launcher checked it already; a library caller may not have
    if type(model.output) is not nn.Linear:
        raise TinytitanError(
            f'[loss] kind = "chunked" needs the output projection as an nn.Linear, not {type(model.output).__name__}: '
            'keep "output" in --quantize.linear.float8.filter_fqns, or use [loss] kind = "plain"'
        )
    compile_cfg = job_config.compile
    backend = compile_cfg.backend if compile_cfg.enable and "loss" in compile_cfg.components else None
    model.output = ChunkedOutput(model.output.weight, job_config.loss.chunk_tokens, Kernels(backend))
    logger.info(
        f"Chunked output projection + cross-entropy: {job_config.loss.chunk_tokens} tokens per chunk"
        + (" (compiled)" if backend else "")
    )


# ---------------------------------------------------------------- the loss function and its inputs


class ModelComputedLoss:
    """``TrainSpec.build_loss_fn``'s result for kind "chunked": the model already summed the loss.

    Given logits instead (a caller that did not pass labels), it computes torchtitan's plain loss.
    """

    labels_to_model = True  # read by model_inputs: the trainer and the validator pass labels to the model

    def __init__(self, plain: Callable):
        self.plain = plain

    def __call__(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if pred.dim() == 0:
            return pred
        return self.plain(pred, labels)


def build_loss(job_config, **kwargs):
    """``TrainSpec.build_loss_fn``: torchtitan's cross-entropy, or the pass-through of the chunked loss."""
    plain = build_cross_entropy_loss(job_config, **kwargs)
    return ModelComputedLoss(plain) if chunked(job_config) else plain


def model_inputs(loss_fn, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Extra keyword inputs of the model's forward: the labels, when the model computes the loss."""
    return {"labels": labels} if getattr(loss_fn, "labels_to_model", False) else {}

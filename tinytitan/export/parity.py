"""Proves an export computes what the trained model computes.

The exported folder is loaded with transformers exactly as a user would, the
torchtitan model is built from the reference weights, and the same random
token ids (at the full training sequence length: RoPE errors grow with the
position) go through both. The export fails if the largest absolute logit
difference exceeds 1e-4 in float32, or if greedy generation of 20 tokens
differs.

For a bfloat16 export two figures are computed. The bfloat16 file, upcast to
float32, must match the torchtitan model with the same bf16-rounded weights to
1e-4: that checks the conversion itself (names, row order, config, RoPE). Then
the bf16 model as users run it (bf16 weights and arithmetic) is compared with
the float32 model; bf16 keeps 8 bits of mantissa, so that bound is looser:
``BF16_BOUND`` times the largest logit magnitude (at least 1).

Float32 arithmetic is not bit-reproducible across kernels, thread counts and CPUs: the
same correct export measured 6e-6 in many runs and once 3.5e-4 under heavy load. So a
float32 comparison over the bound (or a greedy mismatch, which a near-tie can flip) is not
yet a verdict: it is repeated in float64, where kernel and ordering noise is orders of
magnitude smaller while a conversion error (a wrong permutation, RoPE, a config field)
keeps its size. The export fails only if float64 fails too; both figures are recorded.
"""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from pathlib import Path

import torch

from tinytitan.errors import TinytitanError
from tinytitan.models import build_torchtitan

FP32_BOUND = 1e-4
FP64_BOUND = 1e-4  # float64 weights and activations; RoPE tables stay float32 in both libraries
BF16_BOUND = 5e-2  # relative to max(1, max |logit|): bf16 arithmetic over a few layers
GREEDY_TOKENS = 20
PROMPT_TOKENS = 8


@dataclass
class Verification:
    max_abs_diff: float
    bound: float
    seq_len: int
    dtype: str
    greedy_match: bool
    generated: list[int]
    bf16_max_abs_diff: float | None = None
    bf16_bound: float | None = None
    fp64_max_abs_diff: float | None = None  # set when float32 was inconclusive and float64 decided

    def describe(self) -> str:
        text = (
            f"max abs logit diff {self.max_abs_diff:.2e} <= {self.bound:.0e} at {self.seq_len} tokens (float32 arithmetic); "
            f"greedy {len(self.generated)} tokens match"
        )
        if self.fp64_max_abs_diff is not None:
            text = (
                f"float32 arithmetic was inconclusive ({self.max_abs_diff:.2e}), so float64 decided: max abs logit "
                f"diff {self.fp64_max_abs_diff:.2e} <= {FP64_BOUND:.0e} at {self.seq_len} tokens, greedy tokens match"
            )
        if self.bf16_max_abs_diff is not None:
            text += f"; bfloat16 arithmetic vs float32 model: {self.bf16_max_abs_diff:.2e} <= {self.bf16_bound:.2e}"
        return text

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_hf(folder: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one bar per load is noise in the export's output
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation="sdpa")
    except Exception as e:  # transformers raises many types; the message is the useful part
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TinytitanError(f"transformers cannot load {folder}: {first}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval()


@torch.no_grad()
def greedy_torchtitan(model, prompt: torch.Tensor, n: int, eos_id: int | None) -> list[int]:
    """Plain greedy decoding: full forward per token (no KV cache), stopping at eos like ``generate``."""
    ids = prompt
    out: list[int] = []
    for _ in range(n):
        nxt = model(ids)[0, -1].argmax().item()
        out.append(nxt)
        if eos_id is not None and nxt == eos_id:
            break
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


@torch.no_grad()
def greedy_hf(model, prompt: torch.Tensor, n: int, eos_id: int | None) -> list[int]:
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False,
        eos_token_id=eos_id, pad_token_id=eos_id, temperature=None, top_p=None, top_k=None,
    )  # fmt: skip
    return out[0, prompt.shape[1] :].tolist()


def random_ids(vocab_size: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (1, seq_len), generator=gen)


@torch.no_grad()
def verify_hf_folder(
    folder: Path,
    args,
    reference: dict[str, torch.Tensor],
    *,
    seq_len: int,
    dtype: torch.dtype,
    eos_id: int | None = None,
    seed: int = 0,
) -> Verification:
    """Compares the folder, loaded by transformers, with torchtitan on ``reference`` (torchtitan names)."""
    if seq_len < PROMPT_TOKENS + GREEDY_TOKENS:
        raise TinytitanError(
            f"seq_len {seq_len} is shorter than the {PROMPT_TOKENS + GREEDY_TOKENS} tokens verification needs"
        )
    ids = random_ids(args.vocab_size, seq_len, seed)
    rounded = {k: v.to(dtype).float() for k, v in reference.items()} if dtype != torch.float32 else reference
    diff, hf_tokens, ref_tokens, ref_logits = _compare(folder, args, rounded, ids, seq_len, torch.float32, eos_id)
    result = Verification(
        diff, FP32_BOUND, seq_len, str(dtype).removeprefix("torch."), hf_tokens == ref_tokens, hf_tokens
    )
    if not (diff <= FP32_BOUND and result.greedy_match):  # "not <=" also catches NaN
        del ref_logits
        gc.collect()
        diff64, hf_tokens, ref_tokens, _ = _compare(folder, args, rounded, ids, seq_len, torch.float64, eos_id)
        result.fp64_max_abs_diff, result.greedy_match, result.generated = diff64, hf_tokens == ref_tokens, hf_tokens
        if not diff64 <= FP64_BOUND:
            raise TinytitanError(
                f"verification failed: {folder} differs from the torchtitan model by {diff:.3e} in the logits "
                f"in float32 and by {diff64:.3e} in float64 (bound {FP64_BOUND:.0e}); the export is wrong, please report it"
            )
        if not result.greedy_match:
            raise TinytitanError(
                f"verification failed: greedy generation differs in float64 (transformers {hf_tokens} vs torchtitan {ref_tokens})"
            )
        ref_logits = None
    del rounded
    if dtype == torch.bfloat16:
        del ref_logits
        gc.collect()
        full = build_torchtitan(args, reference, seq_len)
        ref_logits = full(ids).float()
        del full
        hf16 = load_hf(folder, torch.bfloat16)
        diff16 = (hf16(input_ids=ids).logits.float() - ref_logits).abs().max().item()
        bound16 = BF16_BOUND * max(1.0, ref_logits.abs().max().item())
        del hf16
        result.bf16_max_abs_diff, result.bf16_bound = diff16, bound16
        if not diff16 <= bound16:
            raise TinytitanError(
                f"verification failed: the bfloat16 export differs from the float32 model by {diff16:.3e} "
                f"(bound {bound16:.3e}); export with --dtype float32"
            )
    return result


@torch.no_grad()
def _compare(folder: Path, args, reference: dict, ids: torch.Tensor, seq_len: int, compute: torch.dtype, eos_id):
    """Max abs logit difference, both greedy continuations, and torchtitan's logits, in ``compute`` arithmetic."""
    weights = {k: v.to(compute) for k, v in reference.items()} if compute != torch.float32 else reference
    prompt = ids[:, :PROMPT_TOKENS]
    tt = build_torchtitan(args, weights, seq_len)
    ref_logits = tt(ids).to(compute)
    ref_tokens = greedy_torchtitan(tt, prompt, GREEDY_TOKENS, eos_id)
    del tt, weights
    gc.collect()
    hf = load_hf(folder, compute)
    diff = (hf(input_ids=ids).logits.to(compute) - ref_logits).abs().max().item()
    hf_tokens = greedy_hf(hf, prompt, GREEDY_TOKENS, eos_id)
    del hf
    gc.collect()
    return diff, hf_tokens, ref_tokens, ref_logits


def verify_meta_folder(folder: Path, args, reference: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """The Meta files hold exactly the reference weights (cast) and the flavor's params."""
    import json

    from tinytitan.export.meta import params_json
    from tinytitan.export.source import META_PARAMS, MetaSource

    params = json.loads((folder / META_PARAMS).read_text())
    if params != params_json(args):
        raise TinytitanError(f"verification failed: {folder / META_PARAMS} does not match the flavor's args")
    written = MetaSource(folder).state
    if set(written) != set(reference):
        raise TinytitanError(f"verification failed: {folder} holds other tensors than the checkpoint")
    for name, tensor in reference.items():
        if written[name].dtype != dtype or not torch.equal(written[name], tensor.to(dtype)):
            raise TinytitanError(f"verification failed: tensor {name} in {folder} differs from the checkpoint")

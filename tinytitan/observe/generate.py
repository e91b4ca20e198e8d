"""``tinytitan generate``: sample text from a checkpoint, or from an HF export with ``--model``.

    tinytitan generate --checkpoint outputs/debug/checkpoint \\
        --prompt "def fibonacci(n):" --max-new-tokens 64 --temperature 0.8 --top-p 0.95 --seed 0

The flavor and tokenizer come from the run's record next to the checkpoint (``--config`` overrides
it); the model and the step it holds are named on stderr.

Training documents start with BOS, so the prompt does too. ``--temperature 0`` is
greedy decoding; the checkpoint and its export then give the same tokens. The
sampler is one piece of code for both paths (and seeded), so sampled text agrees
as well wherever the two models' logits do.
"""

from __future__ import annotations

import json
import sys

import torch

from tinytitan.errors import TinytitanError
from tinytitan.observe.loading import LanguageModel, load
from tinytitan.observe.model_args import add_model_arguments, model_choice


def pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """The next token from last-position logits: argmax at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (never fewer than one token).
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(
    lm: LanguageModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> list[int]:
    """New token ids after ``prompt_ids`` (which include BOS if wanted).

    HF models decode with their KV cache; torchtitan's model re-reads the sequence
    each step (it has no cache), cropped to its context from the left.
    """
    generator = torch.Generator().manual_seed(seed)
    ids = list(prompt_ids)
    new: list[int] = []
    past = None
    fed = 0  # tokens the HF cache already holds
    for _ in range(max_new_tokens):
        if lm.hf and past is not None and len(ids) <= lm.max_seq_len:
            window = ids[fed:]
        else:
            past, window = None, ids[-lm.max_seq_len :]
        logits, past = lm.logits(torch.tensor([window]), past=past, cache=lm.hf)
        fed = len(ids)
        token = pick(logits[0, -1].cpu(), temperature, top_p, generator)
        ids.append(token)
        new.append(token)
        if stop_at_eos and token == lm.eos_id:
            break
    return new


def prompt_ids(lm: LanguageModel, prompt: str) -> list[int]:
    return ([lm.bos_id] if lm.bos_id is not None else []) + lm.encode(prompt)


def configure(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding (default 0.8)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print prompt, completion and token ids as JSON")


def run(args) -> int:
    if args.max_new_tokens < 1:
        raise TinytitanError("--max-new-tokens must be at least 1")
    if args.temperature < 0:
        raise TinytitanError(f"--temperature {args.temperature} is negative: use 0 for greedy decoding, or a value > 0")
    if not 0 < args.top_p <= 1:
        raise TinytitanError(f"--top-p {args.top_p}: use a value in (0, 1]")
    lm = load(model_choice(args))
    print(f"generate: {lm.name}, step {lm.step if lm.step is not None else 'unknown'}", file=sys.stderr, flush=True)
    ids = prompt_ids(lm, args.prompt)
    new = generate(lm, ids, args.max_new_tokens, args.temperature, args.top_p, args.seed)
    text = lm.decode([t for t in new if t != lm.eos_id])
    if args.json:
        print(json.dumps({"model": lm.name, "step": lm.step, "prompt": args.prompt, "completion": text,
                          "prompt_ids": ids, "ids": new}))  # fmt: skip
    else:
        print(args.prompt + text)
        sys.stdout.flush()
    return 0

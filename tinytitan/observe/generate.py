"""``tinytitan generate``: sample text from a checkpoint, or from an HF export with ``--model``.

    tinytitan generate --checkpoint outputs/debug/checkpoint \\
        --prompt "def fibonacci(n):" --max-new-tokens 64 --temperature 0.8 --top-p 0.95 --seed 0

The flavor and tokenizer come from the run's record next to the checkpoint (``--config`` overrides
it); the model and the step it holds are named on stderr.

Training documents start with BOS, so the prompt does too. ``--temperature 0`` is
greedy decoding; the checkpoint and its export then give the same tokens. The
sampler is one piece of code for both paths (and seeded), so sampled text agrees
as well wherever the two models' logits do.

The text streams to stdout as it is sampled (``--json`` prints one JSON document at the
end), and ``--max-new-tokens`` is capped at the model's context (the ``seq_len`` it was
trained on: the config's for a checkpoint, ``tinytitan.json``'s for an export), with one line
saying so: a request of a billion tokens used to run silently until an EOS came.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO

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
    on_token: Callable[[int], None] | None = None,
) -> list[int]:
    """New token ids after ``prompt_ids`` (which include BOS if wanted); ``on_token`` sees each as it comes.

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
        if on_token is not None:
            on_token(token)
        if stop_at_eos and token == lm.eos_id:
            break
    return new


class TextStream:
    """Writes the decoded text of the tokens so far as they come, holding back a character whose
    UTF-8 bytes are not all there yet (a byte-level token can end inside one)."""

    def __init__(self, lm: LanguageModel, out: TextIO):
        self.lm, self.out = lm, out
        self.ids: list[int] = []
        self.shown = 0  # characters written

    def add(self, token: int) -> None:
        if token == self.lm.eos_id:
            return
        self.ids.append(token)
        text = self.lm.decode(self.ids)
        if not text.endswith("\ufffd"):
            self._write(text)

    def finish(self) -> None:
        self._write(self.lm.decode(self.ids))
        self.out.write("\n")
        self.out.flush()

    def _write(self, text: str) -> None:
        if len(text) > self.shown:
            self.out.write(text[self.shown :])
            self.out.flush()
            self.shown = len(text)


def cap_new_tokens(requested: int, context: int) -> int:
    """At most the model's context (the sequence length it was trained on); one line on stderr when the
    request was larger. Beyond it the model only repeats itself, and a billion tokens ran for hours."""
    if requested <= context:
        return requested
    print(f"tinytitan: --max-new-tokens {requested} is more than the model's context of {context} tokens "
          f"(the sequence length it was trained on): generating at most {context}",
          file=sys.stderr, flush=True)  # fmt: skip
    return context


def prompt_ids(lm: LanguageModel, prompt: str) -> list[int]:
    return ([lm.bos_id] if lm.bos_id is not None else []) + lm.encode(prompt)


def configure(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, help="tokens to generate, at most the trained seq_len (default 64)"
    )
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
    from tinytitan.observe.quiet import third_party, wanted

    with third_party(wanted()):
        lm = load(model_choice(args))
    print(f"generate: {lm.name}, step {lm.step if lm.step is not None else 'unknown'}", file=sys.stderr, flush=True)
    sample(lm, args.prompt, args.max_new_tokens, args.temperature, args.top_p, args.seed, as_json=args.json)
    return 0


def sample(lm: LanguageModel, prompt: str, max_new_tokens: int, temperature: float = 0.8, top_p: float = 0.95,
           seed: int = 0, as_json: bool = False) -> None:  # fmt: skip
    """What ``generate`` prints: the prompt and its continuation as they come, or one JSON document."""
    ids = prompt_ids(lm, prompt)
    max_new = cap_new_tokens(max_new_tokens, lm.context)
    if as_json:
        new = generate(lm, ids, max_new, temperature, top_p, seed)
        text = lm.decode([t for t in new if t != lm.eos_id])
        print(json.dumps({"model": lm.name, "step": lm.step, "prompt": prompt, "completion": text, "prompt_ids": ids,
                          "ids": new}))  # fmt: skip
        return
    sys.stdout.write(prompt)
    sys.stdout.flush()
    stream = TextStream(lm, sys.stdout)
    generate(lm, ids, max_new, temperature, top_p, seed, on_token=stream.add)
    stream.finish()

"""``TitanLM``: lm-eval's ``TemplateLM`` over torchtitan's model (see ``tinytitan.observe.harness``).

Imports lm-eval at the top, so only ``harness`` imports this module, after checking lm-eval is
installed (it is an optional extra).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as torch_dist
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM


def _dist():
    return torch_dist if torch_dist.is_available() and torch_dist.is_initialized() else None


class TitanLM(TemplateLM):
    """Scores lm-eval requests with ``forward`` (ids [B, T] -> logits), BOS first as in training."""

    backend = "causal"

    def __init__(self, forward, tokenizer, max_length, device, batch_size, distributed, max_gen_toks, progress=False):
        super().__init__()
        self.progress = progress  # progress bars on stderr (rank 0): only where it is a terminal
        self.forward = forward
        self.tok = tokenizer  # tinytitan.tokenizer.LoadedTokenizer
        self.max_length = max_length
        self._device = torch.device(device)
        self.batch_size = batch_size
        self.max_gen_toks = max_gen_toks
        dist = _dist() if distributed else None
        self.dist = dist
        self._rank = dist.get_rank() if dist else 0
        self._world_size = dist.get_world_size() if dist else 1

    # -- tokens ------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tok.bos_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        ids = self.tok.encode(string)
        if add_special_tokens is False or (ids and ids[0] == self.tok.bos_id):
            return ids
        return [self.tok.bos_id, *ids]

    def tok_decode(self, ids) -> str:
        return self.tok.decode(list(ids))

    # -- ranks (lm-eval's data-parallel hooks) -----------------------------------------
    def all_gather(self, tensor):
        if self.dist is None:
            return tensor
        parts = [torch.zeros_like(tensor) for _ in range(self._world_size)]
        self.dist.all_gather(parts, tensor)
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    def gather_object(self, obj, dst=0):
        if self.dist is None:
            return [obj]
        out = [None] * self._world_size if self._rank == dst else None
        self.dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    def _anyone(self, mine: bool) -> bool:
        """Whether any rank still has a batch to run (every forward is collective under FSDP)."""
        if self.dist is None:
            return mine
        flag = torch.tensor([int(mine)], device=self._device)  # NCCL reduces GPU tensors only
        self.dist.all_reduce(flag, op=self.dist.ReduceOp.MAX)
        return bool(flag.item())

    @torch.no_grad()
    def _logprobs(self, ids: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [B, T, vocab] of one real batch (on several ranks: after saying so)."""
        self._anyone(True)
        return torch.log_softmax(self.forward(ids.to(self._device)).float(), dim=-1)

    @torch.no_grad()
    def _drain(self) -> None:
        """Runs one-token dummy forwards while any other rank still has real batches to run."""
        while self._anyone(False):
            self.forward(torch.tensor([[self.tok.bos_id]], device=self._device))

    # -- requests ------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        from tqdm import tqdm

        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        chunks = (order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size))
        bar = tqdm(total=len(requests), desc="loglikelihood", disable=disable_tqdm or not self.progress or self._rank != 0,
                   leave=False)  # fmt: skip
        for chunk in chunks:
            rows, spans = [], []
            for i in chunk:
                _, context, continuation = requests[i]
                row = (context + continuation)[-(self.max_length + 1) :][:-1]
                rows.append(row)
                spans.append((len(row) - len(continuation), len(row), continuation))
            width = max(map(len, rows))
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
            logprobs = self._logprobs(ids).cpu()
            for r, (i, (start, end, continuation)) in enumerate(zip(chunk, spans, strict=True)):
                part = logprobs[r, start:end]
                target = torch.tensor(continuation)
                score = float(part.gather(1, target[:, None]).sum())
                results[i] = (score, bool((part.argmax(-1) == target).all()))
            bar.update(len(chunk))
        bar.close()
        self._drain()
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """A document's log-likelihood after BOS, in windows of the model's context (as training sees it)."""
        windows, owners = [], []
        for n, req in enumerate(requests):
            (text,) = req.args
            tokens = self.tok.encode(text)
            for context, target in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(tokens, self.tok.bos_id, self.max_length, 1),
            ):
                windows.append(((text, ""), context, target))
                owners.append(n)
        totals = [0.0] * len(requests)
        for owner, (score, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm), strict=True):
            totals[owner] += score
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation until a stop string, EOS or ``max_gen_toks``, longest prompt first."""
        from tqdm import tqdm

        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].args[0]))
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm or not self.progress or self._rank != 0,
                   leave=False)  # fmt: skip
        for i in order:
            context, kwargs = requests[i].args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            budget = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            ids = self.tok_encode(context)[-max(self.max_length - budget, 1) :]
            out[i] = self._greedy(ids, until, budget)
            bar.update(1)
        bar.close()
        self._drain()
        return out

    def _greedy(self, ids: list[int], until: Sequence[str], budget: int) -> str:
        new: list[int] = []
        text = ""
        for _ in range(budget):
            window = (ids + new)[-self.max_length :]
            token = int(self._logprobs(torch.tensor([window]))[0, -1].argmax())
            if token == self.tok.eos_id:
                break
            new.append(token)
            text = self.tok.decode(new)
            if any(stop in text for stop in until):
                break
        for stop in until:
            text = text.split(stop)[0]
        return text

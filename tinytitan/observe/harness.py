"""lm-evaluation-harness on torchtitan's own model: no export needed, in one process or on every training rank.

``TitanLM`` is an ``lm_eval`` ``TemplateLM`` over a logits function (token ids [B, T] -> logits
[B, T, vocab]) and the tokenizer training used. Text becomes ids as in training: every
document starts with BOS (contexts are ``BOS context``; an empty context is BOS alone;
``loglikelihood_rolling`` scores a document after BOS). lm-eval's ``HFLM`` on an export does the
same for loglikelihood when built with ``add_bos_token=True`` (:func:`hf_harness_model`), so the
two paths give the same per-choice log-likelihoods. (Its rolling scores differ by one token:
HFLM puts its BOS prefix before the tokenizer's own BOS.)

Requests are batched longest first, as HFLM batches them, and right-padded: the model is
causal, so padding after a sequence changes none of its logits.

On several ranks (the training loop, FSDP) lm-eval itself splits the documents across ranks
and gathers the metrics on rank 0 (``rank``/``world_size``/``all_gather``/``gather_object``);
every forward pass is an FSDP collective, so before each one the ranks agree whether anyone
still has work, and a rank with none runs one-token dummy batches until all are done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tinytitan.errors import TinytitanError

INSTALL_HINT = "lm-eval is not installed: pip install 'tinytitan[eval]' (or pip install 'lm-eval>=0.4,<0.5')"
SHIPPED_TASKS = Path(__file__).resolve().parent / "eval_tasks"
SAMPLE_TASK = "tinytitan_sample_order"  # the shipped offline task (util/make_eval_task.py)


def require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise TinytitanError(INSTALL_HINT) from None


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _make_base():
    """TemplateLM, imported only when lm-eval is used (it is an optional extra)."""
    require_lm_eval()
    from lm_eval.api.model import TemplateLM

    return TemplateLM


def titan_lm(
    forward: Callable[[torch.Tensor], torch.Tensor],
    tokenizer,
    max_length: int,
    device: torch.device,
    batch_size: int = 16,
    distributed: bool = False,
    max_gen_toks: int = 128,
):
    """An lm-eval model over ``forward``; ``distributed`` splits the work across the process group's ranks."""
    cls = _titan_class()
    return cls(forward, tokenizer, max_length, device, batch_size, distributed, max_gen_toks)


_CLASS = None


def _titan_class():
    global _CLASS
    if _CLASS is None:
        _CLASS = _define(_make_base())
    return _CLASS


def _define(TemplateLM):  # noqa: C901 - one class, defined once lm-eval is importable
    from lm_eval import utils as lm_utils

    class TitanLM(TemplateLM):
        backend = "causal"

        def __init__(self, forward, tokenizer, max_length, device, batch_size, distributed, max_gen_toks):
            super().__init__()
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
            bar = tqdm(total=len(requests), desc="loglikelihood", disable=disable_tqdm or self._rank != 0)
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
            bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm or self._rank != 0)
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

    return TitanLM


def hf_harness_model(folder: str | os.PathLike, batch_size: int, device: str = "cpu"):
    """lm-eval's own HFLM on an export, every context starting with BOS as in training."""
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(folder), batch_size=batch_size, device=device, dtype="float32", add_bos_token=True)


_MANAGERS: dict[str | None, Any] = {}


def task_manager(include_path: str | os.PathLike | None = None):
    """lm-eval's TaskManager with the shipped offline task and ``include_path`` (a folder of task YAMLs).

    Made once per process and folder: indexing lm-eval's thousands of task YAMLs takes seconds,
    which in-loop evaluation and ``--run`` would otherwise pay at every checkpoint.
    """
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise TinytitanError(f"--include-path {include_path} is not a folder of lm-eval task YAML files")
    key = None if include_path is None else str(Path(include_path).resolve())
    if key not in _MANAGERS:
        _MANAGERS[key] = TaskManager(include_path=[str(SHIPPED_TASKS), *([key] if key else [])])
    return _MANAGERS[key]


def run_tasks(lm, tasks: Sequence[str], *, include_path=None, limit: int | None = None,
              num_fewshot: int | None = None, log_samples: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """lm-eval's simple_evaluate on ``lm``: its results dict on rank 0 (None on the other ranks).

    Global RNGs are left as they were (lm-eval seeds them otherwise), so in-loop evaluation
    cannot change training; few-shot sampling keeps lm-eval's own fixed seed.
    """
    from lm_eval import simple_evaluate

    manager = task_manager(include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise TinytitanError(
            f"unknown lm-eval task(s) {', '.join(unknown)}: use lm-eval's task names "
            f"(`lm-eval ls tasks`), {SAMPLE_TASK}, or pass --include-path DIR with their YAML files"
        )
    return simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        log_samples=log_samples,
        random_seed=None,
        numpy_random_seed=None,
        torch_random_seed=None,
        bootstrap_iters=0,
    )


def metric_dict(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """task -> lm-eval's metric dict (``{"acc,none": ...}``): its ``metric,filter`` numbers (no alias, sample count)."""
    out = {}
    for task, metrics in results["results"].items():
        out[task] = {k: float(v) for k, v in metrics.items() if "," in k and isinstance(v, (int, float))}
    return out

"""Held-out loss and perplexity per data source, for a checkpoint or an export (``tinytitan eval loss``).

By default the windows are exactly those the training validator scored: ``[validation] steps`` x
the run's data-parallel ranks x ``local_batch_size`` windows of ``seq_len + 1`` tokens per source,
built by the validator's own code (``tinytitan.data.heldout.heldout_split``) from the run's
record, so ``eval loss`` of a checkpoint reproduces the validation losses logged at its step. Each
window scores ``seq_len`` next-token predictions; loss is their mean per source, "all" weighs the
sources by their mixture weights (as training's ``validation/loss`` does); perplexity is the loss's
exponential. Other window settings say, in one line, why the figures differ from training's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tinytitan.errors import TinytitanError
from tinytitan.observe.loading import LanguageModel

DEFAULT_MAX_BATCHES = 20  # a run that did not validate: batches per source
VALIDATION_KEYS = ("validation.enable", "validation.seq_len", "validation.local_batch_size", "validation.steps")


@dataclass
class SourceResult:
    source: str
    tokens: int  # predictions scored
    loss: float
    perplexity: float


@dataclass(frozen=True)
class Windows:
    """Which held-out windows are scored: those of ``steps`` batches of ``batch_size`` on each of ``ranks``."""

    seq_len: int
    batch_size: int
    steps: int  # -1: all of the split
    ranks: int
    as_validated: bool  # the training validator's own windows
    why: str  # what they are, or why they are not the validator's

    def describe(self) -> str:
        if self.steps < 0:
            return f"all held-out windows of {self.seq_len + 1} tokens per source"
        n = self.steps * self.ranks * self.batch_size
        size = f" ({n * self.seq_len / 1e6:.1f}M predictions)" if n * self.seq_len >= 1e6 else ""
        return f"{self.steps} x {self.ranks} x {self.batch_size} = {n} windows of {self.seq_len + 1} tokens per source{size}"


def choose_windows(trained, step: int | None, *, seq_len: int | None = None, batch_size: int | None = None,
                   max_batches: int | None = None) -> Windows:  # fmt: skip
    """The validator's windows at ``step`` (from the run's record), unless the caller asks for others."""
    v = trained.job.validation
    ranks = trained.data_parallel_ranks(step)
    if seq_len is not None or max_batches is not None:
        size = batch_size or v.local_batch_size
        return Windows(seq_len or v.seq_len, size, max_batches or DEFAULT_MAX_BATCHES, 1, False,
                       "--seq-len/--max-batches chose other windows than the training validator's")  # fmt: skip
    if not v.enable:
        return Windows(trained.seq_len, batch_size or v.local_batch_size, DEFAULT_MAX_BATCHES, 1, False,
                       "the run did not validate ([validation] enable = false)")  # fmt: skip
    overridden = trained.disagreements(VALIDATION_KEYS)
    if overridden:
        return Windows(v.seq_len, v.local_batch_size, v.steps, ranks or 1, False,
                       f"--config's [validation] differs from the run's record: {'; '.join(overridden)}")  # fmt: skip
    if ranks is None:
        return Windows(v.seq_len, v.local_batch_size, v.steps, 1, False,
                       f"{trained.path.name} does not record the run's data-parallel ranks (a --config, not its run.toml); "
                       f"pass --max-batches <validation steps x ranks> to match")  # fmt: skip
    return Windows(v.seq_len, v.local_batch_size, v.steps, ranks, True, "as the training validator scored them")


def held_out(lm: LanguageModel, trained, windows: Windows) -> dict[str, tuple[float, torch.Tensor]]:
    """source -> (mixture weight, windows) for every source with a held-out split."""
    from tinytitan.data.encode import Encoder
    from tinytitan.data.heldout import heldout_split
    from tinytitan.data.planner import make_plan

    data = trained.job.data
    plan = make_plan(data, lm.tokenizer)  # tokens format: checks the shards' tokenizer
    encoder = Encoder(lm.tokenizer) if data.format == "text" else None
    split = heldout_split(plan, data, windows.seq_len, encoder, ranks=windows.ranks, batch_size=windows.batch_size,
                          steps=windows.steps)  # fmt: skip
    weights = {s.name: s.weight for s in plan.sources}
    return {name: (weights[name], w) for name, w in split.items()}


@torch.no_grad()
def score(lm: LanguageModel, windows: torch.Tensor, batch_size: int, desc: str, progress: bool) -> tuple[float, int]:
    """Summed next-token cross-entropy (float64) and the number of predictions."""
    from tqdm import tqdm

    total, count = 0.0, 0
    batches = range(0, len(windows), batch_size)
    for start in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        batch = windows[start : start + batch_size]
        logits, _ = lm.logits(batch[:, :-1])
        labels = batch[:, 1:].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        total += float(loss.double())
        count += labels.numel()
    return total, count


def evaluate(lm: LanguageModel, trained, windows: Windows, *, batch_size: int | None = None, progress: bool = False,
             note: Callable[[str], None] = lambda _: None) -> list[SourceResult]:  # fmt: skip
    """Loss and perplexity per source of the run's held-out split, then over all of them."""
    if trained is None or not trained.job.data.sources:
        raise TinytitanError(
            f"{lm.name}: no run record names its data (the export's tinytitan.json, or run.toml next to the "
            "checkpoint): pass --config TOML, whose [[data.sources]] define the held-out data"
        )
    if windows.seq_len > lm.max_seq_len:
        raise TinytitanError(f"--seq-len {windows.seq_len} exceeds the model's context of {lm.max_seq_len} tokens")
    note(f"{windows.describe()}: {windows.why}")
    results, weights = [], []
    for name, (weight, source_windows) in held_out(lm, trained, windows).items():
        total, count = score(lm, source_windows, batch_size or windows.batch_size, name, progress)
        results.append(SourceResult(name, count, total / count, math.exp(total / count)))
        weights.append(weight)
    if not results:
        raise TinytitanError(
            f"{trained.path}: no source holds out enough data for one batch; add validation_files (or validation_docs) "
            "to its [[data.sources]], or pass a smaller --batch-size"
        )
    # "all" weighs sources as the mixture does, like training's validation/loss.
    loss = sum(r.loss * w for r, w in zip(results, weights, strict=True)) / sum(weights)
    return [*results, SourceResult("all", sum(r.tokens for r in results), loss, math.exp(loss))]

"""``tinytitan eval``: held-out loss and perplexity per data source, for a checkpoint or an export.

    tinytitan eval --checkpoint outputs/debug/checkpoint --config train_configs/llama3_debug.toml
    tinytitan eval --model exports/debug-hf --config train_configs/llama3_debug.toml

With ``--tasks`` it scores lm-eval benchmark tasks instead (``tinytitan.observe.task_eval``),
of one checkpoint, of an export, or of every checkpoint of a run (``--run``,
``tinytitan.observe.curve``).

The held-out split is the config's (``[[data.sources]]`` ``validation_files`` or
``validation_docs``), built exactly as the training validator builds it
(``tinytitan.data.validate.heldout_windows``: ``BOS doc EOS`` runs packed into
``seq_len + 1`` windows, from text or prepared token shards). Each
window scores ``seq_len`` next-token predictions; loss is their mean per source, and
"all" weighs the sources by their mixture weights (as training's ``validation/loss``
does); perplexity is the loss's exponential.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from tinytitan.errors import TinytitanError
from tinytitan.observe.loading import LanguageModel, add_model_arguments, load


@dataclass
class SourceResult:
    source: str
    tokens: int  # predictions scored
    loss: float
    perplexity: float


def held_out(data, tokenizer, seq_len: int, max_windows: int) -> Iterator[tuple[str, float, torch.Tensor]]:
    """(source, mixture weight, windows) for every source with a held-out split, as the training validator builds them."""
    from tinytitan.data.encode import Encoder
    from tinytitan.data.planner import make_plan
    from tinytitan.data.validate import heldout_windows

    plan = make_plan(data, tokenizer)  # tokens format: checks the shards' tokenizer
    encoder = Encoder(tokenizer) if data.format == "text" else None
    for src, cfg in zip(plan.sources, data.sources, strict=True):
        if cfg.validation_files or cfg.validation_docs:
            yield src.name, src.weight, heldout_windows(src, cfg, data, seq_len, encoder, max_windows)
        else:
            print(f"eval: source {src.name!r} holds out no data (set validation_files or validation_docs)",
                  file=sys.stderr)  # fmt: skip


@torch.no_grad()
def score(
    lm: LanguageModel, windows: torch.Tensor, batch_size: int, desc: str, progress: bool = True
) -> tuple[float, int]:
    """Summed next-token cross-entropy (float64) and the number of predictions."""
    from tqdm import tqdm

    total, count = 0.0, 0
    batches = range(0, len(windows), batch_size)
    for start in tqdm(batches, desc=desc, unit="batch", disable=not progress, file=sys.stderr):
        batch = windows[start : start + batch_size]
        logits, _ = lm.logits(batch[:, :-1])
        labels = batch[:, 1:].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        total += float(loss.double())
        count += labels.numel()
    return total, count


def evaluate(lm: LanguageModel, config, seq_len: int | None, batch_size: int | None, max_batches: int,
             progress: bool = True) -> list[SourceResult]:  # fmt: skip
    """Loss and perplexity per source of ``config``'s held-out split, then over all of them."""
    from tinytitan.config import load_job_config
    from tinytitan.data.config import data_config

    job = load_job_config(config)
    seq_len = seq_len or job.validation.seq_len
    batch_size = batch_size or job.validation.local_batch_size
    if seq_len > lm.max_seq_len:
        raise TinytitanError(f"--seq-len {seq_len} exceeds the model's context of {lm.max_seq_len} tokens")
    results, weights = [], []
    for name, weight, windows in held_out(data_config(job), lm.tokenizer, seq_len, max_batches * batch_size):
        if not len(windows):
            print(f"eval: source {name!r}: its held-out split is shorter than one window", file=sys.stderr)
            continue
        total, count = score(lm, windows, batch_size, name, progress)
        results.append(SourceResult(name, count, total / count, math.exp(total / count)))
        weights.append(weight)
    if not results:
        raise TinytitanError(
            f"{config}: no source holds out data; add validation_files (or validation_docs) to its [[data.sources]]"
        )
    # "all" weighs sources as the mixture does, like training's validation/loss.
    loss = sum(r.loss * w for r, w in zip(results, weights, strict=True)) / sum(weights)
    return [*results, SourceResult("all", sum(r.tokens for r in results), loss, math.exp(loss))]


def configure(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--seq-len", type=int, default=None, help="window length (default: the config's [validation])")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: [validation])")
    parser.add_argument("--max-batches", type=int, default=20, help="batches per source at most (default 20)")
    parser.add_argument("--json", action="store_true", help="print JSON: one object per source, or one with --tasks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    tasks = parser.add_argument_group("benchmark tasks (lm-evaluation-harness; pip install 'tinytitan[eval]')")
    tasks.add_argument("--tasks", default=None, help="comma-separated lm-eval tasks, e.g. tinytitan_sample_order")
    tasks.add_argument("--include-path", default=None, help="a folder of extra lm-eval task YAML files")
    tasks.add_argument("--limit", type=int, default=None, help="score at most N documents per task")
    tasks.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    tasks.add_argument("--run", default=None, help="a run's dump folder: score every step-N checkpoint of it")
    tasks.add_argument("--random-init", action="store_true", help="score the --config's untrained model (chance)")
    tasks.add_argument("--force", action="store_true", help="with --run: score again steps saved with other settings")


def run_tasks(args) -> int:
    from tinytitan.observe.harness import require_lm_eval
    from tinytitan.observe.task_eval import (
        DEFAULT_BATCH_SIZE,
        TaskSettings,
        evaluate_checkpoint,
        evaluate_export,
        evaluate_random_init,
        format_table,
        parse_tasks,
    )

    require_lm_eval()
    settings = TaskSettings(parse_tasks(args.tasks), args.include_path, args.limit, args.num_fewshot,
                            args.batch_size or DEFAULT_BATCH_SIZE)  # fmt: skip
    if args.run:
        from tinytitan.observe.curve import evaluate_run

        evaluate_run(args.run, args.config, settings, args.device, not args.no_progress, args.force)
        print(f"wrote {args.run}/eval/step-N.json, summary.csv, summary.md and tb/eval")
        return 0
    if args.random_init:
        if args.config is None or args.checkpoint or args.model:
            raise TinytitanError("--random-init scores the --config TOML's untrained model: pass --config, no model")
        result = evaluate_random_init(args.config, settings, args.device)
    elif bool(args.checkpoint) == bool(args.model):
        raise TinytitanError("pass either --checkpoint CKPT --config TOML, --model HF_DIR, or --run RUN_DIR")
    elif args.model:
        result = evaluate_export(args.model, settings, args.device)
    else:
        if args.config is None:
            raise TinytitanError("--checkpoint needs --config TOML (the training config: flavor and tokenizer)")
        result = evaluate_checkpoint(args.checkpoint, args.config, args.step, settings, args.device)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def run(args) -> int:
    if args.tasks is not None:
        return run_tasks(args)
    if args.run or args.include_path or args.limit is not None or args.num_fewshot is not None:
        raise TinytitanError("--run, --include-path, --limit and --num-fewshot go with --tasks T1,T2")
    if args.config is None:
        raise TinytitanError("eval needs --config TOML: its [[data.sources]] define the held-out data")
    for flag, value in (
        ("--max-batches", args.max_batches),
        ("--seq-len", args.seq_len),
        ("--batch-size", args.batch_size),
    ):
        if value is not None and value < 1:
            raise TinytitanError(f"{flag} {value} must be at least 1")
    lm = load(args)
    results = evaluate(lm, args.config, args.seq_len, args.batch_size, args.max_batches, not args.no_progress)
    if args.json:
        for r in results:
            print(json.dumps({"model": lm.name, **asdict(r)}))
        return 0
    print(f"{lm.name}")
    print(f"{'source':<20} {'tokens':>10} {'loss':>8} {'perplexity':>11}")
    for r in results:
        print(f"{r.source:<20} {r.tokens:>10,} {r.loss:>8.4f} {r.perplexity:>11.2f}")
    return 0

"""``tinytitan eval loss|tasks``: held-out loss per source, or lm-eval benchmark tasks.

    tinytitan eval loss --checkpoint outputs/debug/checkpoint/step-300
    tinytitan eval loss --model exports/debug-hf
    tinytitan eval tasks --tasks tinytitan_sample_order --checkpoint outputs/debug/checkpoint
    tinytitan eval tasks --tasks tinytitan_sample_order --run outputs/debug
    tinytitan eval tasks --tasks tinytitan_sample_order --random-init --config train_configs/llama3_debug.toml

Everything a run trained (flavor, tokenizer, data, validation settings) comes from its record,
``<run>/run.toml``; ``--config`` overrides it. This module is only the command line: argparse
groups check which flags go together, and ``run`` turns the flags into typed values for the
library (``loss_eval``, ``task_eval``, ``curve``). The spelling before the two subcommands
(``tinytitan eval --checkpoint ...``, ``eval --tasks ...``, ``eval --run ...``) still works, with a
one-line note.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from tinytitan.errors import TinytitanError
from tinytitan.observe.model_args import add_model_arguments, at_least_one, model_choice

SUBCOMMANDS = ("loss", "tasks")
HELP = "held-out loss per source (eval loss), or lm-eval benchmark tasks (eval tasks)"


def modern_argv(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """``eval --checkpoint ...`` (before ``eval loss`` / ``eval tasks``) -> the new spelling and a note; else unchanged."""
    argv = list(argv)
    rest = argv[1:]
    if not rest or rest[0] in SUBCOMMANDS or rest[0] in ("-h", "--help"):
        return argv, None
    tasks = any(a == "--tasks" or a.startswith("--tasks=") or a == "--run" or a.startswith("--run=") for a in rest)
    sub = "tasks" if tasks else "loss"
    return [argv[0], sub, *rest], f"`tinytitan eval {rest[0]} ...` is now `tinytitan eval {sub} {rest[0]} ...`"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP
    sub = parser.add_subparsers(dest="eval_command", metavar="{loss,tasks}", required=True)
    loss = sub.add_parser(
        "loss",
        help="held-out loss and perplexity per data source (by default: the training validator's windows)",
        description="Held-out loss and perplexity per data source of a checkpoint or an export. By default the "
        "windows are those the training validator scored (from the run's run.toml), so the loss reproduces the "
        "validation loss logged at that step.",
    )
    add_model_arguments(loss)
    windows = loss.add_argument_group("windows (default: the training validator's, from the run's record)")
    windows.add_argument("--seq-len", type=at_least_one, default=None, help="window length (default [validation])")
    windows.add_argument("--max-batches", type=at_least_one, default=None,
                         help="batches per source (default: [validation] steps x the run's data-parallel ranks)")  # fmt: skip
    windows.add_argument("--batch-size", type=at_least_one, default=None,
                         help="windows per forward pass (default [validation] local_batch_size)")  # fmt: skip
    _output_arguments(loss, "one JSON object per source")

    tasks = sub.add_parser(
        "tasks",
        help="lm-eval benchmark tasks (pip install 'tinytitan[eval]')",
        description="lm-evaluation-harness tasks on torchtitan's own model from a checkpoint, on an export (HFLM), "
        "on every checkpoint of a run, or on the untrained model.",
    )
    tasks.add_argument("--tasks", required=True, help="comma-separated lm-eval tasks, e.g. tinytitan_sample_order")
    group = add_model_arguments(tasks)
    group.add_argument("--run", type=str, help="a run's dump folder: score every step-N checkpoint of it")
    group.add_argument("--random-init", action="store_true", help="the untrained model of --config (chance)")
    harness = tasks.add_argument_group("lm-eval options")
    harness.add_argument("--include-path", default=None, help="a folder of extra lm-eval task YAML files")
    harness.add_argument("--limit", type=at_least_one, default=None, help="score at most N documents per task")
    harness.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    harness.add_argument("--batch-size", type=at_least_one, default=None, help="requests per forward pass (16)")
    harness.add_argument("--force", action="store_true", help="with --run: score again steps saved with other settings")
    _output_arguments(tasks, "one JSON object")


def _output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help=f"print JSON: {what}")
    out.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they are off when stderr is no terminal)"
    )


def _progress(args) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _note(text: str) -> None:
    print(f"eval: {text}", file=sys.stderr, flush=True)


def run(args) -> int:
    from tinytitan.observe.quiet import third_party

    with third_party(_progress(args)):
        return run_loss(args) if args.eval_command == "loss" else run_tasks(args)


def run_loss(args) -> int:
    from tinytitan.observe.loading import load
    from tinytitan.observe.loss_eval import choose_windows, evaluate

    lm = load(model_choice(args))
    windows = choose_windows(lm.trained, lm.step, seq_len=args.seq_len, batch_size=args.batch_size,
                             max_batches=args.max_batches) if lm.trained is not None else None  # fmt: skip
    results = evaluate(lm, lm.trained, windows, batch_size=args.batch_size, progress=_progress(args), note=_note)
    if args.json:
        for r in results:
            print(json.dumps({"model": lm.name, "step": lm.step, **asdict(r)}))
        return 0
    print(f"{lm.name}  step {lm.step if lm.step is not None else 'unknown'}")
    print(f"{'source':<20} {'tokens':>10} {'loss':>8} {'perplexity':>11}")
    for r in results:
        print(f"{r.source:<20} {r.tokens:>10,} {r.loss:>8.4f} {r.perplexity:>11.2f}")
    return 0


def run_tasks(args) -> int:
    from tinytitan.lm_tasks import DEFAULT_BATCH_SIZE, TaskSettings, parse_tasks
    from tinytitan.observe.harness import require_lm_eval
    from tinytitan.observe.task_eval import evaluate_checkpoint, evaluate_export, evaluate_random_init, format_table

    require_lm_eval()
    settings = TaskSettings(parse_tasks(args.tasks), args.include_path, args.limit, args.num_fewshot,
                            args.batch_size or DEFAULT_BATCH_SIZE)  # fmt: skip
    progress = _progress(args)
    if args.weights != "raw" and not args.checkpoint:
        raise TinytitanError(f"--weights {args.weights} applies to --checkpoint only; drop it")
    if args.run:
        from tinytitan.observe.curve import evaluate_run

        evaluate_run(args.run, settings, args.device, progress=progress, force=args.force, config=args.config)
        print(f"wrote {args.run}/eval/step-N.json, summary.csv, summary.md and tb/eval")
        return 0
    if args.random_init:
        result = evaluate_random_init(args.config, settings, args.device, progress=progress)
    elif args.model:
        result = evaluate_export(args.model, settings, args.device, progress=progress)
    else:
        result = evaluate_checkpoint(args.checkpoint, args.step, settings, args.device, config=args.config,
                                     progress=progress, weights=args.weights)  # fmt: skip
    print(json.dumps(result) if args.json else format_table(result))
    return 0

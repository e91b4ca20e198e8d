"""tinytitan: pretrain small Llama 3 models on torchtitan, then export and publish them.

The console script dispatches from one table of subcommands.

Each entry names a module with ``configure(parser)`` and ``run(args) -> int``.
Only the chosen subcommand's module is imported, so ``tinytitan --help`` is fast.
A module may also define ``modern_argv(argv) -> (argv, note)``: an older spelling of its
command, rewritten to the current one with a one-line note. A flag argparse refuses is one
``tinytitan: error:`` line (exit code 2), like every other bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tinytitan.errors import run_guarded

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("tinytitan.launcher.launch", "train with torchrun (GPU nodes, or CPU processes without a GPU)"),
    "models": ("tinytitan.models", "list the model flavors: shapes, parameters, FLOPs"),
    "download-tokenizer": ("tinytitan.tokenizer", "fetch the Llama 3 tokenizer from the Hugging Face Hub"),
    "convert-tokenizer": ("tinytitan.tokenizer_convert", "Meta's original/tokenizer.model -> a tokenizer.json folder"),
    "data": ("tinytitan.data.cli", "prepare token shards, benchmark the data loader"),
    "checkpoint": ("tinytitan.checkpoint.cli", "inspect or upgrade DCP checkpoints"),
    "export": ("tinytitan.export.cli", "convert a checkpoint to Hugging Face / Meta format, verified"),
    "push": ("tinytitan.export.push", "upload an export to a private Hub repo and collection"),
    "plot": ("tinytitan.observe.plot", "draw loss, learning rate and throughput curves as PNG"),
    "eval": (
        "tinytitan.observe.evaluate",
        "held-out loss per source (eval loss), or lm-eval benchmark tasks (eval tasks)",
    ),
    "generate": ("tinytitan.observe.generate", "sample text from a checkpoint or an export"),
    "bench": ("tinytitan.bench.cli", "measure training throughput and MFU per flavor"),
}


class UsageError(Exception):
    """A command line argparse refused: shown as one line, not argparse's usage block."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tinytitan", description=__doc__.splitlines()[0])
    parser.epilog = "Run `tinytitan COMMAND --help` for a command's options."
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).configure(sub_parser)
    return parser


def _prog(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """The (sub)command ``argv`` names, e.g. ``tinytitan checkpoint inspect``: whose help to point at."""
    current = parser
    for word in argv:
        sub = next((a for a in current._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            break
        current = sub.choices[word]
    return current.prog


def main(argv: Sequence[str] | None = None) -> int:
    from tinytitan.observe.quiet import tqdm_default_off

    tqdm_default_off(sys.stderr.isatty())  # before any command imports tqdm
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    try:
        if command is None:
            parser.print_help() if not argv else parser.parse_args(argv)
            return 0 if not argv else 2
        module = importlib.import_module(COMMANDS[command][0])
        if hasattr(module, "modern_argv"):
            argv, note = module.modern_argv(argv)
            if note:
                print(f"tinytitan: note: {note} (the old spelling still works, for now)", file=sys.stderr)
        if getattr(module, "PASS_THROUGH", False):  # e.g. train: torchtitan overrides follow
            args, extra = parser.parse_known_args(argv)
            args.overrides = extra
        else:
            args, extra = parser.parse_known_args(argv)
            if extra:  # the subcommand's own help, not the top-level one's
                prog = _prog(parser, argv)
                raise UsageError(f"{prog}: unrecognized arguments: {' '.join(extra)} (see `{prog} --help`)")
    except UsageError as e:
        print(f"tinytitan: error: {e}", file=sys.stderr)
        return 2
    return run_guarded(lambda: module.run(args))


if __name__ == "__main__":
    sys.exit(main())

"""The command-line flags that name a model (``eval loss``, ``eval tasks``, ``generate``), and their one
conversion into a typed ``ModelChoice``: no argparse Namespace goes further than the command's ``run``.

``--checkpoint`` and ``--model`` are a required, mutually exclusive argparse group (``eval tasks``
adds ``--run`` and ``--random-init`` to it), so argparse, not code, checks the combination.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinytitan.observe.loading import ModelChoice


def step_value(text: str) -> int | str:
    if text == "latest":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step: use N or latest") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a step: use N >= 0 or latest")
    return value


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """--checkpoint | --model (one of them, required), --step, --config, --device; returns the group."""
    which = parser.add_argument_group("the model (one of)")
    group = which.add_mutually_exclusive_group(required=True)
    group.add_argument("--checkpoint", type=Path, help="DCP checkpoint: a step-N folder, or a run's checkpoint folder")
    group.add_argument("--model", type=Path, help="a Hugging Face export folder (written by `tinytitan export`)")
    options = parser.add_argument_group("model options")
    options.add_argument(
        "--step", type=step_value, default="latest", help="with a checkpoint folder: N (default latest)"
    )
    options.add_argument("--config", type=Path, default=None,
                         help="a training TOML instead of the run's record (<run>/run.toml, the default)")  # fmt: skip
    options.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    options.add_argument("--weights", choices=("raw", "ema"), default="raw",
                         help="with --checkpoint: raw (default), or ema: the average of the weights a run with "
                              "[ema] saved")  # fmt: skip
    return group


def model_choice(args: argparse.Namespace) -> ModelChoice:
    return ModelChoice(checkpoint=args.checkpoint, step=args.step, model=args.model, config=args.config,
                       device=args.device, weights=args.weights)  # fmt: skip

"""``tinytitan checkpoint inspect|upgrade``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _step(value: str):
    return value if value == "latest" else int(value)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="checkpoint_command", metavar="ACTION", required=True)
    inspect = sub.add_parser(
        "inspect",
        help="step, tokens, layout, flavor, dtypes, size, whether it can resume",
        description="Describe a DCP checkpoint from its metadata (no weights are loaded).",
    )
    inspect.add_argument("checkpoint", type=Path, help="a step folder, or a checkpoint folder with --step")
    inspect.add_argument("--step", type=_step, default=None, help="N or latest, when CHECKPOINT holds several steps")
    inspect.add_argument("--all", action="store_true", help="list every step folder and whether it is complete")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    upgrade = sub.add_parser(
        "upgrade",
        help="rewrite an older-layout checkpoint (model. keys, freqs_cis) for torchtitan 0.2.2",
        description="Rewrite an older-layout checkpoint into the layout torchtitan 0.2.2 resumes from, "
        "keeping optimizer, scheduler, data loader and step; freqs_cis is dropped (it is recomputed at load).",
    )
    upgrade.add_argument("old", type=Path, help="the older-layout checkpoint (a step folder)")
    upgrade.add_argument("new", type=Path, help="the folder to write, e.g. outputs/run/checkpoint/step-5000")
    upgrade.add_argument("--step", type=_step, default=None, help="N or latest, when OLD holds several steps")
    upgrade.add_argument("--force", action="store_true", help="replace NEW if it exists")


def run(args) -> int:
    if args.checkpoint_command == "inspect":
        from tinytitan.checkpoint.inspect import run as run_inspect

        return run_inspect(args)
    from tinytitan.checkpoint.upgrade import run as run_upgrade

    return run_upgrade(args)

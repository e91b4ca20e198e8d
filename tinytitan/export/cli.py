"""``tinytitan export CHECKPOINT --out DIR [--config TOML]``: see ``tinytitan.export.pipeline``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _step(value: str):
    return value if value == "latest" else int(value)


def configure(parser: argparse.ArgumentParser, *, formats: bool = True) -> None:
    parser.add_argument(
        "checkpoint", type=Path, help="a step folder (outputs/x/checkpoint/step-N), or a checkpoint folder with --step"
    )
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (must be empty unless --force)")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a training TOML instead of the run's record (<run>/run.toml, the default): flavor, tokenizer, seq_len, card",
    )
    parser.add_argument("--step", type=_step, default=None, help="N or latest, when CHECKPOINT holds several steps")
    if formats:
        parser.add_argument("--format", dest="fmt", choices=("hf", "meta", "both"), default="hf",
                            help="hf: transformers folder; meta: consolidated.00.pth + params.json; both: meta under original/")  # fmt: skip
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="weights dtype (default float32)"
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder (default: the run's [model] hf_assets_path)"
    )
    parser.add_argument(
        "--flavor", default=None, help="model flavor (default: the run's [model] flavor, else the one the shapes fit)"
    )
    parser.add_argument(
        "--repo-id", default=None, help="Hub id for the model card's usage example (default: the folder name)"
    )
    parser.add_argument(
        "--license",
        default=None,
        help="the model's license for the card, your choice (e.g. apache-2.0, mit); default: 'unknown' until "
        "you choose one (`tinytitan push --license` can set it later)",
    )
    parser.add_argument("--weights", choices=("raw", "ema"), default="raw",
                        help="raw: the trained weights (default); ema: their average, saved by a run with [ema]")  # fmt: skip
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the transformers parity check")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")


def run(args) -> int:
    from tinytitan.export.pipeline import export

    result = export(
        args.checkpoint, args.out, fmt=getattr(args, "fmt", "hf"), config=args.config, tokenizer=args.tokenizer,
        step=args.step, flavor=args.flavor, dtype=args.dtype, verify=args.verify, force=args.force,
        progress=sys.stderr.isatty(), repo_id=args.repo_id, license=args.license,
        weights=getattr(args, "weights", "raw"),
    )  # fmt: skip
    total = sum(p.stat().st_size for p in result.files)
    print(f"wrote {result.out} ({len(result.files)} files, {total / 2**20:.1f} MiB):")
    for path in result.files:
        print(f"  {path.relative_to(result.out)}")
    if not args.verify:
        print("not verified (--no-verify): run `tinytitan push --dry-run` or export again without it to check")
    return 0

#!/usr/bin/env python3
"""Step 2 of the old three-step route: Meta weights -> a verified Hugging Face folder.

Kept for users who follow the old steps (it replaces transformers'
convert_llama_weights_to_hf.py, and needs no params.json edited by hand):

    python util/2-convert_llama_weights_to_hf.py --input_dir outputs/tiny/llama \
        --output_dir outputs/tiny/hf --config train_configs/llama3_tiny.toml

The flavor comes from the tensor shapes (or --config), config.json from the
flavor -- with the RoPE scaling torchtitan trained with -- and the folder is
checked against torchtitan's model on the same weights before it is written.
A whole checkpoint converts in one step with `tinytitan export`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv=None) -> int:
    import argparse

    from tinytitan.errors import run_guarded

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input_dir", "--input-dir", type=Path, required=True, help="folder with consolidated.00.pth and params.json"
    )
    parser.add_argument(
        "--output_dir", "--output-dir", type=Path, required=True, help="the Hugging Face folder to write"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="the training TOML (flavor, tokenizer, seq_len, model card)"
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer folder with tokenizer.json (default: from --config, else --input_dir)",
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the transformers parity check")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --output_dir")
    args = parser.parse_args(argv)

    def run() -> int:
        from tinytitan.export.pipeline import export
        from tinytitan.export.source import MetaSource

        tokenizer = args.tokenizer
        if tokenizer is None and args.config is None and (args.input_dir / "tokenizer.json").is_file():
            tokenizer = args.input_dir
        result = export(
            None, args.output_dir, fmt="hf", config=args.config, tokenizer=tokenizer, dtype=args.dtype,
            verify=args.verify, force=args.force, source=MetaSource(args.input_dir),
        )  # fmt: skip
        print(f"wrote {result.out}")
        return 0

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

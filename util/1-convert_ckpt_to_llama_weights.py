#!/usr/bin/env python3
"""Step 1 of the old three-step route: DCP checkpoint -> Meta weights (consolidated.00.pth + params.json).

Kept for users who follow the old steps; it is `tinytitan export --format meta`:

    python util/1-convert_ckpt_to_llama_weights.py outputs/tiny/checkpoint/step-50000 \
        --out outputs/tiny/llama --config train_configs/llama3_tiny.toml

Reads only the model tensors of the checkpoint, one at a time (no torch.save of
the training state), and checks the written files against the checkpoint.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv=None) -> int:
    import argparse

    from tinytitan.errors import run_guarded
    from tinytitan.export import cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.configure(parser, formats=False)
    args = parser.parse_args(argv)
    args.fmt = "meta"
    return run_guarded(lambda: cli.run(args))


if __name__ == "__main__":
    sys.exit(main())

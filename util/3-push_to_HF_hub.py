#!/usr/bin/env python3
"""Step 3 of the old three-step route: upload an export to the Hub -- private unless --public.

Kept for users who follow the old steps; it is `tinytitan push`:

    python util/3-push_to_HF_hub.py outputs/tiny/hf --repo-id my-org/tiny-llama \
        --collection my-org/tiny-llamas-0123456789abcdef

The folder is verified first; the token comes from HF_TOKEN or `hf auth login`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv=None) -> int:
    import argparse

    from tinytitan.errors import run_guarded
    from tinytitan.export import push as hub

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hub.configure(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: hub.run(args))


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput and MFU per flavor (the same as ``tinytitan bench``).

    python benchmarks/train_throughput.py --flavor nano --local-batch-size 16 32
    python benchmarks/train_throughput.py --sweep --budget-s 480     # best settings per flavor
    python benchmarks/train_throughput.py                            # CPU: the debug flavor, a few steps

One JSON line per run on stdout; see tinytitan/bench/run.py for the fields.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without `pip install`

from tinytitan.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

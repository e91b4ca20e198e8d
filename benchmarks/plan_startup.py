#!/usr/bin/env python3
"""What does planning the data cost at SlimPajama's scale? A generated tree of 60,000 files.

    python benchmarks/plan_startup.py              # 60,000 .jsonl.zst files in SlimPajama's layout
    python benchmarks/plan_startup.py --files 5000

SlimPajama-627B's train split has 59,166 files (train/chunk1..10/example_train_N.jsonl.zst). The
script writes that many small real zstd files, then times what happens at start: the launcher's
checks (listing the glob, reading the first record), and a rank's plan (listing, a stat per file,
the lanes' parts), built once per process and shared by the loader and the validator.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without `pip install`


def write_tree(root: Path, n_files: int) -> None:
    import zstandard

    blob = zstandard.ZstdCompressor().compress(
        (json.dumps({"text": "a small document", "meta": {"redpajama_set_name": "RedPajamaC4"}}) + "\n").encode()
    )
    per_chunk = -(-n_files // 10)
    for i in range(n_files):
        folder = root / "train" / f"chunk{i // per_chunk + 1}"
        if i % per_chunk == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"example_train_{i % per_chunk}.jsonl.zst").write_bytes(blob)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> int:
    from tinytitan.data.config import Data
    from tinytitan.data.listing import list_sources
    from tinytitan.data.planner import make_plan
    from tinytitan.data.preflight import probe_sources

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="plan-startup-"))
    try:
        _, write_s = timed(lambda: write_tree(root / "SlimPajama-627B", args.files))
        data = Data(sources=[{"name": "slimpajama", "path": str(root / "SlimPajama-627B"),
                              "files": "train/chunk*/*.jsonl.zst", "weight": 1.0}])  # fmt: skip
        files, list_s = timed(lambda: list_sources(data))
        _, probe_s = timed(lambda: probe_sources(data, files))
        plan, plan_s = timed(lambda: make_plan(data))
        again, again_s = timed(lambda: make_plan(data))
        assert again is plan and len(plan.sources[0].files) == args.files
        print(f"{args.files:,} files written in {write_s:.1f}s")
        print(f"launcher: list + check the glob {list_s:.2f}s, read the first record {probe_s:.3f}s")
        print(f"rank: plan (list, stat every file, {len(plan.sources[0].parts):,} parts) {plan_s:.2f}s; "
              f"the validator's second call {again_s * 1e3:.2f} ms (the same plan)")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

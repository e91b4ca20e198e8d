"""Peak memory of Nano training steps with the plain and the chunked loss, on the machine at hand.

    python benchmarks/loss_memory.py                               # CPU: seq 2048, batch 2, one process
    python benchmarks/loss_memory.py --batch 1 --chunk-tokens 512 2048

Each run is `tinytitan bench` (benchmarks/train_throughput.py): torchtitan's trainer on synthetic
tokens over the real 128,256-token vocabulary, 2 steps (the second with AdamW's state), one
process. Without a GPU it runs in fp32 and the peak is the process's peak RSS (what
``memory/max_reserved(GiB)`` reports in CPU mode); on a GPU, torch's peak reserved memory in bf16.
Prints one line per run and a summary; the step-2 losses must agree (same data, same weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without `pip install`

from tinytitan.bench.run import Settings, detect_machine, emit, make_schedule, run_once  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flavor", default="nano")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--chunk-tokens", type=int, nargs="+", default=[1024], help="chunk sizes to measure")
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    machine = detect_machine(ngpu=1)
    schedule = make_schedule(warmup=1, measure=1, log_freq=1)
    runs = [Settings(args.flavor, args.seq_len, args.batch, loss_kind="plain")]
    runs += [
        Settings(args.flavor, args.seq_len, args.batch, loss_kind="chunked", chunk_tokens=c) for c in args.chunk_tokens
    ]
    records = []
    with tempfile.TemporaryDirectory(prefix="tinytitan-loss-mem-") as work:
        for s in runs:
            print(f"loss_memory: {s.label()}", file=sys.stderr, flush=True)
            record = run_once(s, schedule, machine, Path(work), args.timeout_s)
            emit(record, args.out)
            records.append(record)
    print(
        f"\n{args.flavor}, seq {args.seq_len} x batch {args.batch}, one process on {machine.device} ({records[0]['dtype']}):"
    )
    for s, r in zip(runs, records, strict=True):
        what = "plain" if s.loss_kind == "plain" else f"chunked, {s.chunk_tokens} tokens per chunk"
        if r["status"] != "ok":
            print(f"  {what}: {r['status']} ({r.get('error', '')})")
            continue
        print(
            f"  {what}: peak {r['peak_memory_gib']:.2f} GiB, step {r['step_time_s']:.1f} s, step-2 loss {r['loss']:.4f}"
        )
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())

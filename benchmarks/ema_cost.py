"""What the [ema] update costs a training step, on CPU, in one process.

Builds torchtitan's Llama 3 model of each flavor named (float32, CPU), gives every parameter a gradient, and
times, on the same parameters: the [ema] update (``tinytitan.rank.ema.WeightAverage.update``: one fused
``foreach`` lerp over all parameters) and one AdamW step as training runs it (torch's foreach AdamW). Under
FSDP each rank does both on its own shards only, so the ratio holds for any data-parallel degree; the
forward/backward, which costs far more than either, is not timed. Prints the median of ``--repeat`` timings
and the ratio.

    python benchmarks/ema_cost.py                      # debug, seconds
    python benchmarks/ema_cost.py --flavors debug nano # nano: 272M parameters, minutes (6.5 s an AdamW step)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(flavor: str, repeat: int) -> dict:
    from torchtitan.models.llama3 import Transformer

    from tinytitan.job_config import Ema
    from tinytitan.models import flavor_args
    from tinytitan.rank.ema import WeightAverage

    torch.manual_seed(0)
    model = Transformer(flavor_args(flavor))
    with torch.no_grad():
        model.init_weights()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    ema = WeightAverage([model], Ema(enable=True, decay=0.99), model.state_dict().keys())
    adamw = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, foreach=True)
    step = iter(range(1, 10**9))
    ema_s = median_seconds(lambda: ema.update(next(step)), repeat)
    adamw_s = median_seconds(adamw.step, repeat)
    n = sum(p.numel() for p in params)
    return {"flavor": flavor, "parameters": n, "ema_ms": ema_s * 1e3, "adamw_ms": adamw_s * 1e3,
            "ratio": ema_s / adamw_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavors", nargs="+", default=["debug"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training's CPU ranks use 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeat}")
    print(f"{'flavor':<8} {'parameters':>12} {'ema update':>12} {'AdamW step':>12} {'ema/AdamW':>10}")
    for flavor in args.flavors:
        r = measure(flavor, args.repeat)
        print(f"{r['flavor']:<8} {r['parameters']:>12,} {r['ema_ms']:>9.2f} ms {r['adamw_ms']:>9.2f} ms "
              f"{r['ratio']:>9.1%}")  # fmt: skip


if __name__ == "__main__":
    main()

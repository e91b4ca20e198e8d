"""What ``[guard]`` costs a training step, measured on the work itself, in one process.

A flavor's model (default: debug) takes real training steps (forward, backward, torchtitan's
clip_grad_norm_, AdamW) on random tokens, in three variants alternated over ``--rounds``:

- ``plain``: the step alone;
- ``guard``: plus what ``StepGuard.decide`` adds each step: the step's loss all-reduced (a 1-process
  gloo/NCCL group here, so the collective's latency is a lower bound), one device-to-host copy of
  (loss, grad norm) -- on a GPU the one synchronisation the guard adds -- and the Python decision;
- ``guard + layer stats every step``: plus the per-layer statistics (``[guard] stats_freq``) at every
  step; their cost per step in a run is that difference divided by stats_freq (100 by default).

Each variant runs its steps with no synchronisation but its own, so a GPU's queue runs ahead as in
a run. Then the decision alone is timed around it. Prints milliseconds per step (medians).

    python benchmarks/guard_cost.py                   # debug flavor, CPU (or the GPU if there is one)
    python benchmarks/guard_cost.py --flavor micro --steps 10 --seq-len 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavor", default="debug")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--stats-freq", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch
    import torch.distributed as dist
    from torchtitan.distributed import utils as dist_utils
    from torchtitan.models.llama3 import Transformer

    from tinytitan.models import flavor_args
    from tinytitan.rank.guard import Judge
    from tinytitan.rank.layer_stats import LayerStats

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("gloo" if device.type == "cpu" else "nccl", rank=0, world_size=1)
    group = dist.group.WORLD
    torch.manual_seed(0)
    model_args = flavor_args(args.flavor)
    with torch.device(device):
        model = Transformer(model_args)
    with torch.no_grad():
        model.init_weights()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    stats = LayerStats([model], args.stats_freq)
    judge = Judge(window=100, warmup=20, z_threshold=6.0, max_skipped=5)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def now() -> float:
        sync()
        return time.perf_counter()

    def train_step(tokens):
        opt.zero_grad()
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        return loss, dist_utils.clip_grad_norm_(list(model.parameters()), 1.0, foreach=True)

    def decide(loss, norm):  # what StepGuard.decide adds: the loss all-reduced, one host copy, the decision
        total = torch.stack([loss.detach()]).sum().float()
        dist.all_reduce(total, group=group)
        loss_value, norm_value = torch.stack([total.reshape(()), norm.float().reshape(())]).tolist()
        return judge.judge(loss_value, norm_value), norm_value

    def loop(n: int, guard: bool, layer_stats: bool) -> float:
        """ms per step over n steps with no synchronisation but the guard's own: what a run sees."""
        batches = [torch.randint(0, model_args.vocab_size, (args.batch, args.seq_len + 1), device=device)
                   for _ in range(n)]  # fmt: skip
        t0 = now()
        for tokens in batches:
            loss, norm = train_step(tokens)
            norm_value = 0.0
            if guard:
                _, norm_value = decide(loss, norm)
            if layer_stats:
                stats.before_update()
            opt.step()
            if layer_stats:
                stats.after_update(norm_value, 1.0)
        return (now() - t0) * 1e3 / n

    loop(3, True, True)  # warm-up
    results: dict[str, list[float]] = {"plain": [], "guard": [], "guard + layer stats every step": []}
    for _ in range(args.rounds):  # alternated, so that the machine's load drifts over all three alike
        results["plain"].append(loop(args.steps, False, False))
        results["guard"].append(loop(args.steps, True, False))
        results["guard + layer stats every step"].append(loop(args.steps, True, True))
    # the guard's work alone, timed around it (exact on CPU, where nothing runs ahead)
    decide_ms = []
    for _ in range(args.steps):
        tokens = torch.randint(0, model_args.vocab_size, (args.batch, args.seq_len + 1), device=device)
        loss, norm = train_step(tokens)
        t1 = now()
        decide(loss, norm)
        decide_ms.append((now() - t1) * 1e3)
        opt.step()
    dist.destroy_process_group()
    med = {k: statistics.median(v) for k, v in results.items()}
    plain = med["plain"]
    print(f"device {device.type}  flavor {args.flavor}  batch {args.batch} x {args.seq_len} tokens  "
          f"{sum(p.numel() for p in model.parameters()):,} parameters  {args.rounds} rounds of {args.steps} steps")  # fmt: skip
    for name, ms in med.items():
        print(f"  {name:<34} {ms:9.3f} ms/step  ({(ms - plain) / plain:+.2%} vs plain)")
    decide = statistics.median(decide_ms)
    layer = med["guard + layer stats every step"] - med["guard"]
    print(f"  the guard's decision alone          {decide:9.3f} ms  ({decide / plain:.3%} of a step)")
    print(f"  layer stats at stats_freq {args.stats_freq:<5}    {layer / args.stats_freq:9.4f} ms/step on average")


if __name__ == "__main__":
    main()

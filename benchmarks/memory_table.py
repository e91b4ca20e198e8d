"""What fits where: GPU memory of tiny, micro and nano with the real vocabulary, computed from the shapes.

Per GPU, for training under FSDP (torchtitan's recipe in train_configs/: fp32 master
weights, bf16 compute, fp32 gradient reduction, AdamW):

* parameters 4 B, gradients 4 B and AdamW state 8 B per parameter, each divided by the
  FSDP degree; plus the units FSDP holds unsharded at a time (the current and the
  prefetched one: bf16 weights and fp32 unsharded gradients);
* activations per sequence, counted as the tensors eager autograd keeps for backward in
  every block (norm inputs/outputs, q/k/v, attention output, the four SwiGLU tensors), plus
  the loss head: bf16 logits, their fp32 copy, log-softmax's fp32 output and the fp32
  gradients at the start of backward. With full activation checkpointing a block keeps
  only its input, and one block is recomputed at a time.
* the largest local batch = (memory - reserve - static) / activations per sequence, with a
  reserve for the CUDA context, NCCL buffers and allocator fragmentation.

These are eager-mode, plain-loss figures: a compiled run (the configs') and the chunked loss need
much less per sequence; docs/memory.md compares them with peaks measured on an H200.

    python benchmarks/memory_table.py                 # the markdown table of docs/memory.md
    python benchmarks/memory_table.py --check-cpu     # + one measured CPU step of Micro (peak RSS)

The CPU check trains Micro one step (2 gloo processes, fp32, real vocabulary) through the
launcher and compares the largest rank's peak RSS with the same formulas in fp32.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
GPUS = {"H100 80GB": 79.6 * GIB, "H200 141GB": 140.4 * GIB}  # what torch.cuda reports as total memory
RESERVE = 4 * GIB  # CUDA context, NCCL buffers, allocator fragmentation


@dataclass(frozen=True)
class Shapes:
    flavor: str
    params: int
    layer_params: int
    unit_params: list  # FSDP units: embedding, each block, norm + output
    dim: int
    kv_dim: int
    ffn: int
    layers: int
    vocab: int


def shapes(flavor: str) -> Shapes:
    import torch
    from torchtitan.models.llama3 import Transformer

    from tinytitan.models import flavor_args

    args = flavor_args(flavor)
    with torch.device("meta"):
        model = Transformer(args)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    layer = count(model.layers["0"])
    units = [count(model.tok_embeddings), *[layer] * args.n_layers, count(model.norm) + count(model.output)]
    return Shapes(
        flavor, count(model), layer, units, args.dim, args.dim * args.n_kv_heads // args.n_heads,
        model.layers["0"].feed_forward.w1.weight.shape[0], args.n_layers, args.vocab_size,
    )  # fmt: skip


def static_bytes(s: Shapes, fsdp: int, gather_bytes: int = 2) -> dict:
    """Sharded fp32 params/grads/AdamW, plus two unsharded units (weights + fp32 grads)."""
    top2 = sorted(s.unit_params)[-2:]
    return {
        "params": 4 * s.params / fsdp,
        "grads": 4 * s.params / fsdp,
        "adamw": 8 * s.params / fsdp,
        "unsharded_units": (gather_bytes + 4) * sum(top2),
    }


def block_activation_bytes(s: Shapes, seq: int, a: int) -> float:
    """Bytes one block keeps per sequence (a: bytes per activation element)."""
    return a * seq * (6 * s.dim + 2 * s.kv_dim + 4 * s.ffn) + 2 * 4 * seq  # + fp32 RMSNorm rstd


def head_bytes(s: Shapes, seq: int, a: int) -> float:
    """Loss head per sequence: logits (a B), fp32 copy (bf16 only), log-softmax output, fp32 grads."""
    return seq * s.vocab * (a + (4 if a != 4 else 0) + 4 + 4) + 2 * a * seq * s.dim


def activation_bytes(s: Shapes, seq: int, a: int, checkpointing: bool) -> float:
    block = block_activation_bytes(s, seq, a)
    backward_work = a * seq * (2 * s.ffn + 2 * s.dim)  # gradients of one block's activations
    body = s.layers * a * seq * s.dim + block if checkpointing else s.layers * block
    return body + backward_work + head_bytes(s, seq, a)


def table(seq: int = 2048) -> str:
    """Two markdown tables: bytes per GPU, then the largest local batch per GPU and FSDP degree."""
    sizes = [
        "| flavor | parameters | params / grads / AdamW per GPU, FSDP 8 | same, FSDP 32 | "
        f"activations per sequence @{seq}: no AC / full AC |",
        "|---|---|---|---|---|",
    ]
    batches = [
        "| flavor | " + " | ".join(f"{gpu}, FSDP {n}" for gpu in GPUS for n in (8, 32)) + " |",
        "|---|" + "---|" * (2 * len(GPUS)),
    ]
    for flavor in ("tiny", "micro", "nano"):
        s = shapes(flavor)
        cells = [flavor, f"{s.params / 1e6:,.0f}M"]
        for n in (8, 32):
            st = static_bytes(s, n)
            cells.append(" / ".join(f"{st[k] / GIB:.2f}" for k in ("params", "grads", "adamw")) + " GiB")
        act = [activation_bytes(s, seq, 2, ac) for ac in (False, True)]
        cells.append(f"{act[0] / GIB:.2f} / {act[1] / GIB:.2f} GiB")
        sizes.append("| " + " | ".join(cells) + " |")
        fits = [flavor]
        for cap in GPUS.values():
            for n in (8, 32):
                free = cap - RESERVE - sum(static_bytes(s, n).values())
                fits.append(" / ".join(str(max(0, int(free // x))) for x in act))
        batches.append("| " + " | ".join(fits) + " |")
    note = f"\nLargest local batch at seq {seq} (no activation checkpointing / full):\n\n"
    return "\n".join(sizes) + "\n" + note + "\n".join(batches)


def predicted_cpu_rank(s: Shapes, seq: int, batch: int, ranks: int) -> dict:
    """One CPU rank in fp32 (FSDP over ``ranks`` processes), without the process's own baseline."""
    st = static_bytes(s, ranks, gather_bytes=4)
    return {**st, "activations": batch * activation_bytes(s, seq, 4, checkpointing=False)}


def _max_child_rss(cmd: list[str], env: dict) -> tuple[int, float]:
    """Runs cmd; returns the peak RSS of its largest (grand)child process, in bytes, and the seconds taken."""
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, time.perf_counter() - t0


def check_cpu(seq: int, batch: int) -> None:
    from importlib.resources import files

    from tinytitan.tokenizer_convert import convert_tokenizer

    s = shapes("micro")
    with tempfile.TemporaryDirectory(prefix="tinytitan-mem-") as tmp:
        tok = Path(tmp) / "llama3"
        convert_tokenizer(Path(str(files("llama_models") / "llama3" / "tokenizer.model")), tok, log=lambda _: None)
        env = {**os.environ, "NGPU": "2", "CONFIG_FILE": str(REPO / "train_configs/llama3_debug.toml")}
        # The baseline of a rank: Python, torch, torchtitan and tinytitan loaded, no model.
        base, _ = _max_child_rss([sys.executable, "-c", "import torchtitan.train, tinytitan.register"], env)
        overrides = [
            "--model.flavor", "micro", "--model.hf_assets_path", str(tok), "--training.steps", "1",
            "--training.seq_len", str(seq), "--training.local_batch_size", str(batch), "--validation.no-enable",
            "--checkpoint.no-enable", "--metrics.no-enable_tensorboard", "--job.dump_folder", str(Path(tmp) / "run"),
        ]  # fmt: skip
        peak, seconds = _max_child_rss([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], env)
    pred = predicted_cpu_rank(s, seq, batch, ranks=2)
    total = base + sum(pred.values())
    # In the first step AdamW's state does not exist yet during the backward pass (it is made by
    # optimizer.step(), after the gradients): that step peaks without it; later steps carry it.
    first = total - pred["adamw"]
    print(f"\nCPU check: Micro, 2 gloo ranks, fp32, seq {seq} x batch {batch}, one step ({seconds:.0f} s)")
    print("  predicted per rank: " + ", ".join(f"{k} {v / GIB:.2f}" for k, v in pred.items()) + " GiB")
    print(f"  + process baseline {base / GIB:.2f} GiB (imports only) = {total / GIB:.2f} GiB from step 2 on,")
    print(f"  {first / GIB:.2f} GiB in the first step's backward pass (no AdamW state yet)")
    print(
        f"  measured peak RSS of the largest rank in one step: {peak / GIB:.2f} GiB "
        f"({peak / first:.0%} of the first-step prediction)"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--check-cpu", action="store_true", help="also train Micro one step on CPU and compare peak RSS")
    p.add_argument("--cpu-seq-len", type=int, default=512)
    p.add_argument("--cpu-batch", type=int, default=2)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    print(table(args.seq_len))
    if args.check_cpu:
        check_cpu(args.cpu_seq_len, args.cpu_batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())

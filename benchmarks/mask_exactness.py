"""Document masking's exactness: a packed window's per-token loss against its documents run alone.

torchtitan's Llama 3 with ``attn_mask_type = "block_causal"`` (``attn_type`` flex, or varlen on a GPU) gets
one batch of four rows, in one forward pass (one compiled shape):

- row 0: three documents packed into one window, each ending in EOS;
- rows 1-3: each document alone at the start of its own window (EOS-separated random tokens fill the rest,
  after it: causal attention keeps them out of the document's tokens whatever the mask does).

Each document's per-token losses in the packed row must equal its losses alone (the EOS -> next BOS step is
not scored). RoPE is relative, so a document's offset changes only rounding. Where the kernel has a backward
(CUDA), the gradients of the packed row's loss and of the three alone rows' loss are compared too. A control
row proves the check can fail: the packed window under a plain causal mask (the documents read each other).

    python benchmarks/mask_exactness.py                       # CUDA: nano at 2048, flex and varlen
    python benchmarks/mask_exactness.py --flavor debug --seq-len 128 --attn flex   # CPU: forward only

Prints one JSON line per attention type: max |loss diff| packed vs alone (and the control's), the gradients'
largest relative difference, ``exact`` (within the dtype's tolerance), ``status``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinytitan.compat import flex_attention_compiled_by  # noqa: E402

# |per-token loss diff| allowed: float32 (flex) differs by rounding only; varlen runs in bfloat16.
TOLERANCE = {"float32": 2e-4, "bfloat16": 3e-2}
SPLIT = (0.3, 0.45)  # the first two documents' shares of the window; the third takes the rest


@dataclasses.dataclass
class Eos:
    """What torchtitan's mask builders read of a tokenizer."""

    eos_id: int


def windows(vocab: int, eos: int, seq: int, generator):
    """The four rows (inputs, labels) and each document's (row, start, length) places, packed and alone."""
    import torch

    def tokens(n: int) -> list[int]:
        t = torch.randint(0, vocab - 1, (n,), generator=generator)
        return (t + (t >= eos).long()).tolist()  # never the EOS id

    lengths = [int(seq * SPLIT[0]), int(seq * SPLIT[1])]
    lengths.append(seq + 1 - sum(lengths))
    docs = [tokens(n - 1) + [eos] for n in lengths]
    rows, places = [sum(docs, [])], []
    at = 0
    for i, doc in enumerate(docs):
        rest = seq + 1 - len(doc)
        filler = tokens(rest)
        for j in range(0, rest, 97):
            filler[j] = eos  # the filler is documents too
        rows.append(doc + filler)
        places.append(((0, at), (i + 1, 0), len(doc) - 1))  # len-1 scored steps: the doc's tokens, then its EOS
        at += len(doc)
    batch = torch.tensor(rows)
    inputs, labels = batch[:, :-1], batch[:, 1:].clone()
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for (r0, s0), (r1, s1), n in places:
        keep[r0, s0 : s0 + n] = True
        keep[r1, s1 : s1 + n] = True
    labels[~keep] = -100  # only the documents' own steps are scored
    return inputs, labels, places


def check(flavor: str, seq: int, attn: str, device, seed: int = 0) -> dict:
    import torch
    import torch.nn.functional as F
    from torchtitan.models.llama3 import Transformer

    from tinytitan.bench.run import BENCH_TOKENIZER
    from tinytitan.models import flavor_args
    from tinytitan.tokenizer import load_tokenizer

    eos = load_tokenizer(BENCH_TOKENIZER).eos_id
    dtype = torch.bfloat16 if attn == "varlen" else torch.float32
    args = dataclasses.replace(flavor_args(flavor), attn_type=attn, attn_mask_type="block_causal", max_seq_len=seq)
    args.eos_id = eos
    torch.manual_seed(seed)
    with torch.device(device):
        model = Transformer(args)
        with torch.no_grad():
            model.init_weights()
    for param in model.parameters():  # not Module.to(dtype): it would cast the complex RoPE table to real
        param.data = param.data.to(dtype)
    generator = torch.Generator().manual_seed(seed)
    inputs, labels, places = windows(args.vocab_size, eos, seq, generator)
    inputs, labels = inputs.to(device), labels.to(device)
    backward = device.type == "cuda"  # FlexAttention has no backward on the CPU
    t0 = time.perf_counter()
    with torch.set_grad_enabled(backward):
        logits = model(inputs, attention_masks=model.get_attention_masks(inputs, Eos(eos)))
        losses = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(0, 1), reduction="none",
                                 ignore_index=-100).view(labels.shape)  # fmt: skip
    diffs = []
    for (r0, s0), (r1, s1), n in places:
        diffs.append((losses[r0, s0 : s0 + n] - losses[r1, s1 : s1 + n]).abs().max().item())
    grad_diff = None
    if backward:
        params = [p for p in model.parameters() if p.requires_grad]
        packed = torch.autograd.grad(losses[0].sum(), params, retain_graph=True)
        alone = torch.autograd.grad(losses[1:].sum(), params)
        grad_diff = max(((a - b).norm() / b.norm().clamp_min(1e-12)).item() for a, b in zip(packed, alone, strict=True))
    with torch.no_grad():  # control: the packed row with no EOS split (a causal mask): documents 2 and 3 change
        control_inputs = inputs[:1]
        if attn == "flex":
            control = model(control_inputs, attention_masks=model.get_attention_masks(control_inputs, Eos(-1)))
        else:  # varlen: one sequence per row
            no_eos = control_inputs.clone()
            no_eos[no_eos == eos] = (eos + 1) % args.vocab_size
            control = model(control_inputs, attention_masks=model.get_attention_masks(no_eos, Eos(eos)))
        control_losses = F.cross_entropy(control.float()[0], labels[0], reduction="none", ignore_index=-100)
        control_diff = max(
            (control_losses[s0 : s0 + n] - losses[r1, s1 : s1 + n]).abs().max().item()
            for (_, s0), (r1, s1), n in places[1:]
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    tol = TOLERANCE[str(dtype).removeprefix("torch.")]
    exact = max(diffs) <= tol and (grad_diff is None or grad_diff <= 10 * tol)
    return {
        "what": f"{flavor} seq{seq} {attn} block_causal: 3 documents packed vs alone",
        "attn_type": attn, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "doc_tokens": [n + 1 for *_, n in places], "max_abs_loss_diff": max(diffs),
        "per_doc_max_abs_loss_diff": diffs, "grad_max_rel_diff": grad_diff, "tolerance": tol,
        "control_causal_max_abs_loss_diff": control_diff, "exact": exact,
        "status": "ok" if exact and control_diff > tol else "failed", "wall_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavor", default=None, help="default: nano on CUDA, debug on the CPU")
    parser.add_argument("--seq-len", type=int, default=None, help="default: 2048 on CUDA, 128 on the CPU")
    parser.add_argument(
        "--attn", default=None, help="comma-separated: flex,varlen (default: both on CUDA, flex on CPU)"
    )
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if cuda:  # float32 must be float32 for the comparison
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if cuda else "cpu")
    flavor = args.flavor or ("nano" if cuda else "debug")
    seq = args.seq_len or (2048 if cuda else 128)
    ok = True
    for attn in (args.attn or ("flex,varlen" if cuda else "flex")).split(","):
        if attn == "varlen" and not cuda:
            record = {"what": f"{flavor} seq{seq} varlen", "attn_type": attn, "status": "skipped",
                      "error": "varlen attention needs a CUDA GPU"}  # fmt: skip
        else:
            try:
                # correctness, not speed: FlexAttention compiled without torchtitan's max-autotune (minutes of
                # tuning on a GPU), and on the CPU only traced (inductor's CPU code takes minutes to build)
                with flex_attention_compiled_by("inductor" if cuda else "eager"):
                    record = check(flavor, seq, attn, device)
            except Exception as e:  # one kernel failing must not hide the other's result
                record = {"what": f"{flavor} seq{seq} {attn}", "attn_type": attn, "status": "failed",
                          "error": f"{type(e).__name__}: {e}"[:400]}  # fmt: skip
        ok = ok and record["status"] != "failed"
        print(json.dumps(record), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Model flavors: the one place where a model size is defined.

``SHAPES`` holds each flavor's numbers as plain values, so listing the flavors (``tinytitan models``), naming
them in a check, and the shapes of their tensors (``checkpoint inspect``) need neither torch nor torchtitan.
torchtitan builds exactly these: ``flavor_args`` turns a row into torchtitan's ``TransformerModelArgs`` (``FLAVORS``
holds them all, built on first use), and tests/test_models.py checks the tensor shapes, parameter counts and FLOPs
computed here against the model torchtitan builds, so the two cannot drift. To add a size, add one row to
``SHAPES`` (and a row to the README).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING

from tinytitan.errors import TinytitanError

if TYPE_CHECKING:
    from torchtitan.models.llama3 import TransformerModelArgs

SPEC_NAME = "tinytitan"  # [model] name of tinytitan's TrainSpec, whose flavors are FLAVORS
LLAMA3_VOCAB = 128256  # Llama 3 tokenizer, incl. 256 reserved special tokens
DEBUG_VOCAB = 4096  # the embedded tokenizer in tinytitan/assets/tokenizer
TRAIN_SEQ_LEN = 2048


def _llama3(dim: int, n_layers: int, n_heads: int, vocab_size: int = LLAMA3_VOCAB) -> dict:
    """The ``TransformerModelArgs`` fields a flavor sets; the FFN hidden size is derived (``ffn_hidden``)."""
    return {
        "dim": dim,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": 4,
        "vocab_size": vocab_size,
        "multiple_of": 256,
        "ffn_dim_multiplier": None,
        "norm_eps": 1e-5,
        "rope_theta": 500000,
        "max_seq_len": TRAIN_SEQ_LEN,
    }


SHAPES: dict[str, dict] = {
    "tiny": _llama3(dim=2048, n_layers=22, n_heads=32),  # TinyLlama 1.1B shape
    "micro": _llama3(dim=1024, n_layers=16, n_heads=16),
    "nano": _llama3(dim=768, n_layers=12, n_heads=12),
    "debug": _llama3(dim=256, n_layers=4, n_heads=8, vocab_size=DEBUG_VOCAB),  # CPU smoke
}
FLAVOR_NAMES: tuple[str, ...] = tuple(SHAPES)

_built: dict[str, TransformerModelArgs] = {}


def __getattr__(name: str):
    """``FLAVORS``: name -> torchtitan's ``TransformerModelArgs``, built (importing torchtitan) on first use."""
    if name == "FLAVORS":
        if not _built:
            from torchtitan.models.llama3 import TransformerModelArgs

            _built.update({flavor: TransformerModelArgs(**row) for flavor, row in SHAPES.items()})
        return _built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _shape_row(flavor: str) -> dict:
    if flavor not in SHAPES:
        raise KeyError(f"unknown flavor {flavor!r}; choose one of {', '.join(SHAPES)}")
    return SHAPES[flavor]


def flavor_args(flavor: str) -> TransformerModelArgs:
    """A fresh copy of a flavor's args (torchtitan mutates them in place)."""
    from torchtitan.models.llama3 import TransformerModelArgs

    return TransformerModelArgs(**_shape_row(flavor))


def ffn_hidden(row: dict) -> int:
    """The SwiGLU hidden size torchtitan's Llama 3 derives: 2/3 of 4 x dim, times the multiplier, rounded up to
    a multiple of ``multiple_of``."""
    hidden = int(2 * (4 * row["dim"]) / 3)
    if row["ffn_dim_multiplier"] is not None:
        hidden = int(row["ffn_dim_multiplier"] * hidden)
    step = row["multiple_of"]
    return step * ((hidden + step - 1) // step)


def state_shapes(flavor: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor in the state dict torchtitan's Llama 3 has for ``flavor``, in its order."""
    row = _shape_row(flavor)
    dim, heads, vocab = row["dim"], row["n_heads"], row["vocab_size"]
    head_dim = dim // heads
    kv = (row["n_kv_heads"] or heads) * head_dim
    hidden = ffn_hidden(row)
    layer = [
        ("attention.wq.weight", (heads * head_dim, dim)),
        ("attention.wk.weight", (kv, dim)),
        ("attention.wv.weight", (kv, dim)),
        ("attention.wo.weight", (dim, heads * head_dim)),
        ("feed_forward.w1.weight", (hidden, dim)),
        ("feed_forward.w2.weight", (dim, hidden)),
        ("feed_forward.w3.weight", (hidden, dim)),
        ("attention_norm.weight", (dim,)),
        ("ffn_norm.weight", (dim,)),
    ]
    shapes = [("tok_embeddings.weight", (vocab, dim))]
    for i in range(row["n_layers"]):
        shapes += [(f"layers.{i}.{name}", shape) for name, shape in layer]
    return [*shapes, ("norm.weight", (dim,)), ("output.weight", (vocab, dim))]


@dataclass(frozen=True)
class FlavorSummary:
    flavor: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_hidden: int
    vocab_size: int
    total_params: int
    non_embedding_params: int  # without the token embedding and the output projection
    flops_per_token: int  # training FLOPs per token at seq_len, as torchtitan counts them (6N + attention)
    seq_len: int
    args: dict


def summarize(flavor: str, seq_len: int = TRAIN_SEQ_LEN, *, with_args: bool = True) -> FlavorSummary:
    """Parameters and FLOPs from the flavor's tensor shapes (no model is built). FLOPs per token as torchtitan
    counts them: 6 x the parameters outside the token embedding, plus 6 x layers x heads x 2 x head_dim x seq_len
    for attention. ``args``: every ``TransformerModelArgs`` field (imports torchtitan); empty without ``with_args``."""
    row = _shape_row(flavor)
    shapes = state_shapes(flavor)
    total = sum(prod(shape) for _, shape in shapes)
    embedding = prod(shapes[0][1])
    head_dim = row["dim"] // row["n_heads"]
    flops = 6 * (total - embedding) + 6 * row["n_layers"] * row["n_heads"] * 2 * head_dim * seq_len
    return FlavorSummary(
        flavor=flavor,
        dim=row["dim"],
        n_layers=row["n_layers"],
        n_heads=row["n_heads"],
        n_kv_heads=row["n_kv_heads"],
        ffn_hidden=ffn_hidden(row),
        vocab_size=row["vocab_size"],
        total_params=total,
        non_embedding_params=total - embedding - prod(shapes[-1][1]),
        flops_per_token=flops,
        seq_len=seq_len,
        args=args_to_dict(flavor_args(flavor)) if with_args else {},
    )


def args_to_dict(args: TransformerModelArgs) -> dict:
    """Every field torchtitan builds with, JSON-ready: ``TransformerModelArgs(**...)`` rebuilds the flavor
    (with ``rope_scaling_args`` as ``RoPEScalingArgs(**...)``)."""
    return {k: v for k, v in dataclasses.asdict(args).items() if not k.startswith("_")}


def _human(n: int) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def configure(parser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON, with every TransformerModelArgs field (imports torchtitan)"
    )
    parser.add_argument("--seq-len", type=int, default=TRAIN_SEQ_LEN, help="sequence length for FLOPs per token")


def run(args) -> int:
    import json

    summaries = [summarize(name, args.seq_len, with_args=args.json) for name in FLAVOR_NAMES]
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in summaries], indent=2))
        return 0
    header = (
        "flavor",
        "dim",
        "layers",
        "heads",
        "kv_heads",
        "ffn_hidden",
        "vocab",
        "params",
        "non_emb",
        f"flops/tok@{args.seq_len}",
    )
    rows = [
        (
            s.flavor,
            s.dim,
            s.n_layers,
            s.n_heads,
            s.n_kv_heads,
            s.ffn_hidden,
            s.vocab_size,
            _human(s.total_params),
            _human(s.non_embedding_params),
            _human(s.flops_per_token),
        )
        for s in summaries
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True)))
    return 0


def build_torchtitan(args: TransformerModelArgs, state: dict, seq_len: int | None = None):
    """torchtitan's Llama 3 ``Transformer`` holding ``state`` (assigned, not copied), with its RoPE table for
    ``seq_len`` (default ``args.max_seq_len``), in eval mode: the one model builder of eval, generate and export.

    The RoPE table is a non-persistent buffer (never in a checkpoint): torchtitan's own method computes it.
    """
    import torch
    from torchtitan.models.llama3 import Transformer

    from tinytitan.compat import rope_table

    if seq_len is not None:
        args = dataclasses.replace(args, max_seq_len=seq_len)
    with torch.device("meta"):
        model = Transformer(args)
    model.load_state_dict(state, strict=True, assign=True)
    model.freqs_cis = rope_table(model)
    return model.eval()


# ---------------------------------------------------------------- Muon's parameter groups (tinytitan/rank/muon.py)

DEFAULT_MUON_PARAMS = ("layers.*.attention.w*", "layers.*.feed_forward.w*")
WRAPPER_PARTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")


def clean_name(name: str) -> str:
    """A parameter's FQN without the wrappers compile and activation checkpointing add."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_PARTS)


def assign_groups(named_shapes: list[tuple[str, tuple[int, ...]]], muon_params) -> dict[str, str]:
    """Parameter name -> its group ("muon", "embed", "output", "adamw"), by name and shape only.

    A pattern of ``muon_params`` (fnmatch on the FQN) that matches what Muon cannot take (not a 2-D
    matrix, the embedding or the output projection) is one line naming the parameter and the fix.
    """
    groups = {}
    for raw, shape in named_shapes:
        name = clean_name(raw)
        matched = [pattern for pattern in muon_params if fnmatch.fnmatchcase(name, pattern)]
        role = "embed" if name.startswith("tok_embeddings.") else "output" if name.startswith("output.") else None
        if matched and (role or len(shape) != 2):
            what = f"the {'embedding' if role == 'embed' else 'output projection'}" if role else f"{len(shape)}-D"
            raise TinytitanError(
                f"[optimizer] muon_params pattern {matched[0]!r} matches {name} ({what}), which Muon cannot take: "
                f"Muon orthogonalizes 2-D hidden matrices only; narrow the pattern (default: {list(DEFAULT_MUON_PARAMS)})"
            )
        groups[raw] = "muon" if matched else role or "adamw"
    if "muon" not in groups.values():
        raise TinytitanError(
            f'[optimizer] muon_params {list(muon_params)} match no 2-D hidden matrix: name = "Muon" would train '
            f'nothing with Muon; use the default {list(DEFAULT_MUON_PARAMS)} or name = "AdamW"'
        )
    return groups


def check_flavor_groups(flavor: str, muon_params: list[str]) -> dict[str, str]:
    """``assign_groups`` over a flavor's parameters, built on the meta device (no memory, no file read)."""
    import torch
    from torchtitan.models.llama3 import Transformer

    with torch.device("meta"):  # torchtitan's Llama 3: the parameters and names of tinytitan's model
        model = Transformer(flavor_args(flavor))
    return assign_groups([(name, tuple(p.shape)) for name, p in model.named_parameters()], muon_params)

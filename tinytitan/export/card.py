"""The model card (README.md) and the provenance record of an export.

The card's YAML front matter is what the Hub indexes (library, license, tags,
datasets); the body says what the model is and how it was trained, so a
published repo answers "which run is this?" without the training machine.
"""

from __future__ import annotations

import json

DEFAULT_LICENSE = "apache-2.0"
TAGS = ("llama", "llama-3", "text-generation", "torchtitan", "tinytitan")


def _num(n) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _tokens(stats) -> str:
    if stats.ntokens_seen:
        return f"{_num(stats.ntokens_seen)} ({stats.ntokens_seen:,})"
    if stats.ntokens_per_rank:
        return f"{_num(stats.ntokens_per_rank)} per data-parallel rank"
    return "unknown"


def front_matter(*, license: str, datasets: list[str]) -> str:
    lines = ["---", "library_name: transformers", f"license: {license}", "pipeline_tag: text-generation", "tags:"]
    lines += [f"- {t}" for t in TAGS]
    if datasets:
        lines += ["datasets:"] + [f"- {d}" for d in datasets]
    return "\n".join(lines + ["---", ""])


def model_card(
    *,
    repo_name: str,
    flavor: str,
    summary,
    stats,
    settings,
    dtype: str,
    verification=None,
    license: str = DEFAULT_LICENSE,
) -> str:
    """README.md text. ``summary`` is ``tinytitan.models.summarize(flavor)``, ``stats`` a ``RunStats``."""
    rope = summary.args.get("rope_scaling_args", {})
    loss = f"{stats.last_loss:.4f} (step {stats.loss_step})" if stats.last_loss is not None else "unknown"
    rows = [
        ("Flavor", f"`{flavor}`"),
        ("Parameters", f"{_num(summary.total_params)} ({summary.total_params:,}); {_num(summary.non_embedding_params)} without embeddings"),
        ("Shape", f"dim {summary.dim}, {summary.n_layers} layers, {summary.n_heads} heads, {summary.n_kv_heads} KV heads, FFN {summary.ffn_hidden}, vocab {summary.vocab_size}"),
        ("Training steps", str(stats.step) if stats.step is not None else "unknown"),
        ("Tokens seen", _tokens(stats)),
        ("Last training loss", loss),
        ("Training sequence length", str(settings.seq_len)),
        ("Weights dtype", dtype),
        ("RoPE", f"theta {summary.args.get('rope_theta')}, Llama-3.1 scaling: " + ", ".join(f"{k} {v:g}" for k, v in rope.items())),
    ]  # fmt: skip
    if verification is not None:
        rows.append(("Export check", verification.describe().replace("|", "")))
    body = [
        f"# {repo_name}",
        "",
        "A Llama 3 model pretrained from scratch with tinytitan (torchtitan 0.2.2), exported and checked by `tinytitan export`.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{repo_name}")',
        'ids = tokenizer("The capital of France is", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))",
        "```",
        "",
        "The model was trained on sequences of "
        f"{settings.seq_len} tokens; `max_position_embeddings` is the range of its RoPE scaling, not a tested context length.",
        "",
    ]
    if settings.text:
        body += ["## Training config", "", "```toml", settings.text.rstrip(), "```", ""]
    return front_matter(license=license, datasets=settings.datasets) + "\n".join(body)


def provenance(*, flavor, settings, stats, dtype, source, verification=None, fmt: str) -> str:
    """tinytitan.json: what ``push`` re-checks against, and where the export came from."""
    import tinytitan

    record = {
        "tinytitan_version": getattr(tinytitan, "__version__", None),
        "flavor": flavor,
        "seq_len": settings.seq_len,
        "dtype": dtype,
        "format": fmt,
        "source": source,
        "step": stats.step,
        "ntokens_seen": stats.ntokens_seen,
        "ntokens_per_rank": stats.ntokens_per_rank,
        "last_loss": stats.last_loss,
        "verification": verification.to_dict() if verification is not None else None,
    }
    return json.dumps(record, indent=2) + "\n"

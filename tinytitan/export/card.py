"""The model card (README.md) and the provenance record (tinytitan.json) of an export.

The card's YAML front matter is what the Hub indexes (library, license, tags,
datasets); the body says what the model is and how it was trained -- steps, tokens,
sequence length, data sources and their weights (and stages), precision, the config --
from the run's record (``tinytitan.run.record.TrainedRun``), so a published repo answers
"which run is this?" without the training machine.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_LICENSE = "apache-2.0"
DEFAULT_SEQ_LEN = 2048  # torchtitan's training.seq_len: what verification runs at when the run is unknown
TAGS = ("llama", "llama-3", "text-generation", "torchtitan", "tinytitan")
# Folder names of the sample/full corpora -> their Hub ids, for the card's `datasets`.
KNOWN_DATASETS = {
    "slimpajama-627b": "cerebras/SlimPajama-627B",
    "slimpajama": "cerebras/SlimPajama-627B",
    "starcoderdata": "bigcode/starcoderdata",
}


def hub_datasets(trained) -> list[str]:
    """The Hub ids of the run's data sources that are known corpora (or Hub datasets themselves)."""
    found: list[str] = []
    for name, _, path in trained.sources() if trained is not None else []:
        hub_id = KNOWN_DATASETS.get(Path(path).name.lower()) or KNOWN_DATASETS.get(name.lower())
        if hub_id and hub_id not in found:
            found.append(hub_id)
    return found


def data_text(trained) -> str:
    """``slimpajama 70% (SlimPajama-627B), starcoderdata 30% (starcoderdata)``."""
    return ", ".join(f"{name} {share:.0%} ({Path(path).name})" for name, share, path in trained.sources())


def stages_text(trained) -> str:
    """One phrase per ``[[data.stages]]``: its name, its end in tokens and its weights."""
    parts = []
    for stage in trained.stages():
        raw = getattr(stage, "weights", None) or {}
        weights = ", ".join(f"{k} {v:g}" for k, v in raw.items()) if isinstance(raw, dict) else str(raw)
        until = getattr(stage, "until_tokens", None)
        parts.append(f"{getattr(stage, 'name', '?')} until {_num(until)} tokens" + (f" ({weights})" if weights else ""))
    return "; ".join(parts)


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
    trained,
    dtype: str,
    verification=None,
    license: str = DEFAULT_LICENSE,
    weights: str = "raw",
) -> str:
    """README.md text. ``summary`` is ``tinytitan.models.summarize(flavor)``, ``stats`` a ``RunStats``,
    ``trained`` the run's ``TrainedRun`` (None: unknown)."""
    rope = summary.args.get("rope_scaling_args", {})
    loss = f"{stats.last_loss:.4f} (step {stats.loss_step})" if stats.last_loss is not None else "unknown"
    known = trained is not None
    rows = [
        ("Flavor", f"`{flavor}`"),
        ("Parameters", f"{_num(summary.total_params)} ({summary.total_params:,}); {_num(summary.non_embedding_params)} without embeddings"),
        ("Shape", f"dim {summary.dim}, {summary.n_layers} layers, {summary.n_heads} heads, {summary.n_kv_heads} KV heads, FFN {summary.ffn_hidden}, vocab {summary.vocab_size}"),
        ("Training steps", str(stats.step) if stats.step is not None else "unknown"),
        ("Tokens seen", _tokens(stats)),
        ("Last training loss", loss),
        ("Training sequence length", str(trained.seq_len) if known else "unknown"),
        ("Training data", data_text(trained) if known and trained.sources() else "unknown"),
    ]  # fmt: skip
    if known and trained.stages():
        rows.append(("Data stages", stages_text(trained)))
    rows += [
        ("Training precision", trained.precision(stats.step) if known else "unknown"),
        ("Weights dtype", dtype),
        ("Weights", WEIGHTS_TEXT[weights]),
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
        (f"The model was trained on sequences of {trained.seq_len} tokens; " if known else "")
        + "`max_position_embeddings` is the range of its RoPE scaling, not a tested context length.",
        "",
    ]
    if known:
        where = "the run's record (`run.toml`)" if trained.recorded else f"`{trained.path.name}` (given to the export)"
        body += ["## Training config", "",
                 f"From {where}: every value that differs from torchtitan's and tinytitan's defaults.", "",
                 "```toml", trained.config_text().rstrip(), "```", ""]  # fmt: skip
        launches = [s for s in trained.run.segments if s.started]
        if launches:
            body += ["## Launches", "", "| started | from step | processes | device | tinytitan | torchtitan | commit |",
                     "|---|---:|---:|---|---|---|---|"]  # fmt: skip
            body += [f"| {s.started} | {s.start_step} | {s.world_size} | {s.device} | {s.tinytitan_version} | "
                     f"{s.torchtitan_version} | {s.git_commit[:12] or '-'} |" for s in launches]  # fmt: skip
            body.append("")
    return front_matter(license=license, datasets=hub_datasets(trained)) + "\n".join(body)


def trained_dict(trained, stats) -> dict | None:
    """What was trained, for tinytitan.json (None when the run is unknown)."""
    if trained is None:
        return None
    return {
        "seq_len": trained.seq_len,
        "steps": stats.step,
        "ntokens_seen": stats.ntokens_seen,
        "precision": trained.precision(stats.step),
        "data": [{"name": n, "weight": w, "path": p} for n, w, p in trained.sources()],
        "stages": [_plain(stage) for stage in trained.stages()],
        "config": str(trained.path),
        "from_run_record": trained.recorded,
    }


def _plain(value):
    import dataclasses

    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


WEIGHTS_TEXT = {"raw": "the trained weights of the last step", "ema": "the exponential moving average of the "
                "trained weights ([ema] in the training config), not the last step's"}  # fmt: skip


def provenance(*, flavor, trained, stats, dtype, source, verification=None, fmt: str, weights: str = "raw") -> str:
    """tinytitan.json: what ``push`` re-checks against, where the export came from, and what was trained."""
    import tinytitan

    record = {
        "tinytitan_version": getattr(tinytitan, "__version__", None),
        "flavor": flavor,
        "seq_len": trained.seq_len if trained is not None else None,
        "dtype": dtype,
        "format": fmt,
        "source": source,
        "weights": weights,  # "raw" or "ema" (the average of the weights)
        "step": stats.step,
        "ntokens_seen": stats.ntokens_seen,
        "ntokens_per_rank": stats.ntokens_per_rank,
        "last_loss": stats.last_loss,
        "run_record": str(trained.path) if trained is not None and trained.recorded else None,
        "trained": trained_dict(trained, stats),
        "verification": verification.to_dict() if verification is not None else None,
    }
    return json.dumps(record, indent=2) + "\n"

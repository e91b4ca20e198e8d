"""The model card (README.md) and the provenance record (tinytitan.json) of an export.

The card's YAML front matter is what the Hub indexes (library, license, tags,
datasets); the body says what the model is and how it was trained -- what it was initialised
from, steps, tokens (this run's and in all), sequence length, data sources and their weights,
the stages as they ran, precision, the config -- from the run's record
(``tinytitan.run.record.TrainedRun``) and its parents' (``tinytitan.checkpoint.stats.parent_of``),
so a published repo answers "which run is this?" without the training machine. What may be
published (no local paths, declared datasets only, the user's license) is ``tinytitan.export.published``.

The card's table is a list of (label, text) rows built by ``card_rows``: a new fact is one more row.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tinytitan.export.published import (
    UNCHOSEN_LICENSE,
    declared_datasets,
    published_path,
    scrub,
    source_licenses,
)

DEFAULT_SEQ_LEN = 2048  # torchtitan's training.seq_len: what verification runs at when the run is unknown
TAGS = ("llama", "llama-3", "text-generation", "torchtitan", "tinytitan")


def data_text(trained) -> str:
    """``slimpajama 70% (SlimPajama-627B), starcoderdata 30% (starcoderdata; license odc-by)``: each source's
    share, its folder's name (or Hub id) and the license it declares."""
    licenses = dict(source_licenses(trained))
    parts = []
    for name, share, path in trained.sources():
        where = Path(path).name if "://" not in path else path
        lic = f"; license {licenses[name]}" if licenses.get(name) else ""
        parts.append(f"{name} {share:.0%} ({where}{lic})")
    return ", ".join(parts)


def stage_runs(trained, stats) -> list[dict]:
    """Each ``[[data.stages]]`` stage as the run went up to the checkpoint's step: its first and last step
    (from the stage counters the run logged, else from the plan), its tokens per source, what was planned."""
    from tinytitan.data.stages import run_spans
    from tinytitan.errors import TinytitanError

    stages = trained.stages()
    if not stages:
        return []
    segment = trained.segment_at(None)
    try:
        spans = run_spans(trained.job, segment.world_size) if segment is not None and segment.world_size else []
    except TinytitanError:
        spans = []
    step = stats.step

    def first_step(i: int) -> int | None:
        name = stages[i].name
        if name in stats.stage_first_step:
            return stats.stage_first_step[name]
        if i < len(spans) and step is not None and spans[i].first_step <= step:
            return spans[i].first_step
        return None

    out = []
    for i, stage in enumerate(stages):
        first = first_step(i)
        following = first_step(i + 1) if i + 1 < len(stages) else None
        out.append({
            "name": stage.name,
            "first_step": first,
            "last_step": None if first is None else (following - 1 if following is not None else step),
            "tokens": dict(stats.stage_tokens.get(stage.name, {})),
            "until_tokens": stage.until_tokens,
            "weights": dict(stage.weights),
            "lr": stage.lr,
        })  # fmt: skip
    return out


def stages_text(trained, stats) -> str:
    """One phrase per stage: its steps as run, its tokens per source, its planned end."""
    parts = []
    for stage in stage_runs(trained, stats):
        planned = f"until {stage['until_tokens']:,} tokens" if stage["until_tokens"] else "to the end of the run"
        if stage["first_step"] is None:
            parts.append(f"{stage['name']}: not reached by step {stats.step} (planned {planned})")
            continue
        tokens = stage["tokens"]
        counted = ""
        if tokens:
            total = sum(tokens.values())
            counted = f", {total:,} tokens (" + ", ".join(f"{k} {v:,}" for k, v in tokens.items()) + ")"
            if stats.counted_at is not None and stats.counted_at != stats.step:
                counted += f" as counted at step {stats.counted_at}"
        parts.append(f"{stage['name']}: steps {stage['first_step']}-{stage['last_step']}{counted}; planned {planned}")
    return "; ".join(parts)


def health_text(trained, step: int | None) -> str:
    """The steps ``[guard]`` skipped and its rollbacks up to ``step``, from the run's ``steps.jsonl``; "" if none."""
    from tinytitan.run.folder import RunFolder
    from tinytitan.run.steps import StepLog, read_events

    if trained is None or not trained.recorded:
        return ""
    events = read_events(RunFolder.at(trained.path.parent)).events
    return StepLog([e for e in events if step is None or e.step <= step]).summary()


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


def total_tokens(stats, parent) -> int | None:
    """Tokens the exported weights have seen: this run's and every parent's (None when a count is unknown)."""
    if parent is None:
        return stats.ntokens_seen
    earlier = parent.total_tokens()
    return None if earlier is None or stats.ntokens_seen is None else earlier + stats.ntokens_seen


def parent_text(parent) -> str:
    """``…/debug/checkpoint/step-20 (step 20, 163,840 tokens; its data: slimpajama 70%, …)``, then its parents."""
    parts = []
    for link in parent.chain():
        facts = [f"step {link.step}" if link.step is not None else "step unknown"]
        facts.append(f"{link.ntokens_seen:,} tokens" if link.ntokens_seen is not None else "tokens unknown")
        if link.recorded and link.sources:
            facts.append("its data: " + ", ".join(f"{name} {share:.0%}" for name, share, _ in link.sources))
        if link.stages:
            facts.append("stages " + ", ".join(link.stages))
        if not link.recorded:
            facts.append("no run record beside it")
        parts.append(f"`{published_path(link.path)}` ({'; '.join(facts)})")
    return ", itself initialised from ".join(parts) + "; weights only (a fresh optimizer, LR schedule and data stream)"


def front_matter(*, license: str, datasets: list[str]) -> str:
    lines = ["---", "library_name: transformers", f"license: {license}", "pipeline_tag: text-generation", "tags:"]
    lines += [f"- {t}" for t in TAGS]
    if datasets:
        lines += ["datasets:"] + [f"- {d}" for d in datasets]
    return "\n".join(lines + ["---", ""])


def intro(trained, parent) -> str:
    tail = "with tinytitan (torchtitan 0.2.2), exported and checked by `tinytitan export`."
    if parent is not None:
        return f"A Llama 3 model initialised from `{published_path(parent.path)}` and trained further {tail}"
    if trained is None:
        return f"A Llama 3 model trained {tail} (its run record was not available to the export)"
    return f"A Llama 3 model pretrained from random weights {tail}"


def card_rows(
    *, flavor, summary, stats, trained, dtype, verification, license, parent, weights: str = "raw"
) -> list[tuple[str, str]]:
    """The card's table: (label, text) per fact, in order."""
    rope = summary.args.get("rope_scaling_args", {})
    loss = f"{stats.last_loss:.4f} (step {stats.loss_step})" if stats.last_loss is not None else "unknown"
    known = trained is not None
    steps = str(stats.step) if stats.step is not None else "unknown"
    tokens = _tokens(stats)
    if parent is not None:
        steps += " in this run"
        total = total_tokens(stats, parent)
        tokens += " in this run; " + (f"{_num(total)} ({total:,}) in all, the parents' included" if total is not None
                                      else "unknown in all (a parent's count is unknown)")  # fmt: skip
    rows = [
        ("Flavor", f"`{flavor}`"),
        ("Parameters", f"{_num(summary.total_params)} ({summary.total_params:,}); {_num(summary.non_embedding_params)} without embeddings"),
        ("Shape", f"dim {summary.dim}, {summary.n_layers} layers, {summary.n_heads} heads, {summary.n_kv_heads} KV heads, FFN {summary.ffn_hidden}, vocab {summary.vocab_size}"),
    ]  # fmt: skip
    if parent is not None:
        rows.append(("Initialised from", parent_text(parent)))
    rows += [
        ("Training steps", steps),
        ("Tokens seen", tokens),
        ("Last training loss", loss),
        ("Training sequence length", str(trained.seq_len) if known else "unknown"),
        ("Training data", data_text(trained) if known and trained.sources() else "unknown"),
    ]
    if stats.source_tokens:
        at = f" (step {stats.counted_at})" if stats.counted_at is not None and stats.counted_at != stats.step else ""
        rows.append(("Tokens per source", ", ".join(f"{k} {v:,}" for k, v in stats.source_tokens.items()) + at))
    if known and trained.stages():
        rows.append(("Data stages", stages_text(trained, stats)))
    rows += [
        ("Training precision", trained.precision(stats.step) if known else "unknown"),
        ("Weights dtype", dtype),
        ("Weights", WEIGHTS_TEXT[weights]),
        ("RoPE", f"theta {summary.args.get('rope_theta')}, Llama-3.1 scaling: " + ", ".join(f"{k} {v:g}" for k, v in rope.items())),
        ("License", license if license != UNCHOSEN_LICENSE else "not chosen: `tinytitan export --license ID` or `tinytitan push --license ID`"),
    ]  # fmt: skip
    if health_text(trained, stats.step):
        rows.append(("Training health", health_text(trained, stats.step)))
    if verification is not None:
        rows.append(("Export check", verification.describe().replace("|", "")))
    return rows


def published_config(trained) -> str:
    """The run's config as the card shows it: keys that differ from the defaults, without the record's own
    file and run folder, local paths as ``published_path`` shows them."""
    job = copy.deepcopy(trained.job)
    job.job.config_file = None
    job.job.dump_folder = type(job.job)().dump_folder
    from tinytitan.run.toml_text import to_toml

    return scrub(to_toml(job, only_changed=True, skip=("run",)))


def model_card(
    *,
    repo_name: str,
    flavor: str,
    summary,
    stats,
    trained,
    dtype: str,
    verification=None,
    license: str | None = None,
    parent=None,
    datasets: tuple[str, ...] = (),
    weights: str = "raw",
) -> str:
    """README.md text. ``summary`` is ``tinytitan.models.summarize(flavor)``, ``stats`` a ``RunStats``,
    ``trained`` the run's ``TrainedRun`` (None: unknown), ``parent`` what it was initialised from
    (``parent_of``), ``license`` the user's choice (None: unknown), ``datasets`` Hub ids declared besides
    the sources' own."""
    license = license or UNCHOSEN_LICENSE
    rows = card_rows(flavor=flavor, summary=summary, stats=stats, trained=trained, dtype=dtype,
                     verification=verification, license=license, parent=parent, weights=weights)  # fmt: skip
    known = trained is not None
    body = [
        f"# {repo_name}",
        "",
        intro(trained, parent),
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
                 f"From {where}: every value that differs from torchtitan's and tinytitan's defaults "
                 "(local paths shortened to their last part).", "",
                 "```toml", published_config(trained).rstrip(), "```", ""]  # fmt: skip
        launches = [s for s in trained.run.segments if s.started]
        if launches:
            body += ["## Launches", "", "| started | from step | processes | device | tinytitan | torchtitan | commit |",
                     "|---|---:|---:|---|---|---|---|"]  # fmt: skip
            body += [f"| {s.started} | {s.start_step} | {s.world_size} | {s.device} | {s.tinytitan_version} | "
                     f"{s.torchtitan_version} | {s.git_commit[:12] or '-'} |" for s in launches]  # fmt: skip
            body.append("")
    metadata = front_matter(license=license, datasets=declared_datasets(trained, parent, datasets))
    return scrub(metadata + "\n".join(body))


def parent_dict(parent) -> dict | None:
    if parent is None:
        return None
    return {
        "path": published_path(parent.path),
        "step": parent.step,
        "ntokens_seen": parent.ntokens_seen,
        "ntokens_total": parent.total_tokens(),
        "from_run_record": parent.recorded,
        "description": parent.description,
        "data": [{"name": n, "weight": w} for n, w, _ in parent.sources],
        "stages": parent.stages,
        "datasets": parent.datasets,
        "initialised_from": parent_dict(parent.parent),
    }


def trained_dict(trained, stats, parent=None) -> dict | None:
    """What was trained, for tinytitan.json (None when the run is unknown)."""
    if trained is None:
        return None
    licenses = dict(source_licenses(trained))
    return {
        "seq_len": trained.seq_len,
        "steps": stats.step,
        "ntokens_seen": stats.ntokens_seen,
        "ntokens_total": total_tokens(stats, parent),
        "initialised_from": parent_dict(parent),
        "precision": trained.precision(stats.step),
        "data": [
            {
                "name": n,
                "weight": w,
                "path": published_path(p),
                "hub_id": s.declared_hub_id(),
                "license": licenses.get(n, ""),
            }
            for (n, w, p), s in zip(trained.sources(), trained.job.data.sources, strict=True)
        ],  # fmt: skip
        "tokens_per_source": stats.source_tokens,
        "tokens_counted_at_step": stats.counted_at,
        "stages": stage_runs(trained, stats),
        "config": trained.path.name,
        "from_run_record": trained.recorded,
    }


WEIGHTS_TEXT = {"raw": "the trained weights of the last step", "ema": "the exponential moving average of the "
                "trained weights ([ema] in the training config), not the last step's"}  # fmt: skip


def provenance(*, flavor, trained, stats, dtype, source, verification=None, fmt: str, parent=None,
               license: str | None = None, datasets: tuple[str, ...] = (), weights: str = "raw") -> str:  # fmt: skip
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
        "license": license or UNCHOSEN_LICENSE,
        "datasets": declared_datasets(trained, parent, datasets),
        "run_record": trained.path.name if trained is not None and trained.recorded else None,
        "trained": trained_dict(trained, stats, parent),
        "verification": verification.to_dict() if verification is not None else None,
    }
    return scrub(json.dumps(record, indent=2, ensure_ascii=False)) + "\n"

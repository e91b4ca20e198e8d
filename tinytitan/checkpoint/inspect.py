"""``tinytitan checkpoint inspect``: what a checkpoint holds, from its metadata alone.

Reads ``.metadata``, the few small values of ``train_state`` and the data loader's
state document (the stage and the tokens per source); no weights are loaded, so it
answers in seconds for any model size. What the run trained with (sequence length,
data, precision) comes from its record, ``<run>/run.toml``.

Neither torch nor torchtitan is imported for a checkpoint that ``tinytitan.checkpoint.light`` can list and
a record read as plain TOML (no ``[[data.stages]]``, whose shares need the stage plan): the same report,
in a fraction of a second. Otherwise torch's reader and the full config reader answer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tinytitan.checkpoint.completeness import folder_bytes, folder_problem
from tinytitan.checkpoint.completeness import step_folders as all_step_folders
from tinytitan.checkpoint.flavors import fitting_flavor
from tinytitan.checkpoint.reader import open_checkpoint
from tinytitan.checkpoint.stats import checkpoint_stats
from tinytitan.errors import TinytitanError
from tinytitan.run.steps import describe_health, read_health


def data_state(ckpt) -> dict | None:
    """The data stream as saved (``tinytitan.data.loader_state``): tokens per source, the stage and its tokens.
    None when the checkpoint holds no tinytitan loader state (model only) or it cannot be read."""
    from tinytitan.data.loader_state import STATE_KEY, LoaderState

    key = f"dataloader.{STATE_KEY}"
    if key not in ckpt.other_keys or folder_problem(ckpt.path) is not None:
        return None
    try:
        state = LoaderState.from_json(ckpt.read_value(key))
    except (TinytitanError, ValueError, KeyError):
        return None
    stage = state.stage_at()
    return {
        "windows": state.windows,
        "tokens_per_source": state.tokens_per_source(),
        "stage": None if stage is None else stage.name,
        "stage_index": None if stage is None else state.stages.index(stage),
        "stages": [
            {"name": st.name, "first_step": st.first_step, "last_step": st.last_step, "weights": st.weights}
            for st in state.stages
        ],
        "stage_tokens": state.stage_tokens,
    }


def inspect_checkpoint(path: str | os.PathLike, step: int | str | None = None) -> dict:
    """A JSON-ready description; the keys are those ``--json`` prints."""
    from tinytitan.run.record import read_trained_run

    ckpt = open_checkpoint(path, step, check=False, light=True)  # a truncated one is reported, not refused
    stats = checkpoint_stats(ckpt)
    trained = _trained_plain(ckpt.path, stats.step)
    if trained is None:
        full = read_trained_run(ckpt.path)
        trained = {
            "run_record": str(full.path) if full is not None else None,  # <run>/run.toml
            "trained_flavor": full.flavor if full is not None else None,
            "seq_len": full.seq_len if full is not None else None,
            "sources": [{"name": n, "weight": w} for n, w, _ in full.sources()] if full is not None else None,
            "precision": full.precision(stats.step) if full is not None else None,
        }
    params = sum(e.numel for e in ckpt.model.values())
    problem = folder_problem(ckpt.path)
    return {
        "path": str(ckpt.path),
        "step": stats.step,
        "ntokens_seen": stats.ntokens_seen,  # all ranks, from metrics.jsonl next to the checkpoint
        "ntokens_per_rank": stats.ntokens_per_rank,  # train_state.ntokens_seen: torchtitan counts one rank
        "last_loss": stats.last_loss,
        "layout": ckpt.layout,
        "freqs_cis": ckpt.freqs_cis_key is not None,
        "needs_upgrade": ckpt.layout != "flat" or ckpt.freqs_cis_key is not None,
        "flavor": fitting_flavor(ckpt.shapes()),
        "model_tensors": len(ckpt.model),
        "parameters": params,
        "dtypes": ckpt.dtypes(),
        "model_bytes": ckpt.model_bytes,
        "size_on_disk": ckpt.size_on_disk,
        "optimizer": ckpt.has_state("optimizer"),
        "lr_scheduler": ckpt.has_state("lr_scheduler"),
        "dataloader": ckpt.has_state("dataloader"),
        "train_state": ckpt.has_state("train_state"),
        "ema": ckpt.has_ema,  # an average of the weights ([ema]): --weights ema of export, eval, generate
        "complete": problem is None,
        "problem": problem,  # why the folder is not complete (a truncated .distcp, no .metadata)
        "resumable": ckpt.resumable and problem is None,
        "data": data_state(ckpt),
        "health": read_health(ckpt.path),  # [guard]: healthy or suspect (tinytitan.run.steps), None: unknown
        **trained,
    }


def _trained_plain(where: Path, step: int | None) -> dict | None:
    """What ``inspect`` shows of the run's record, read as plain TOML (no torch); None where the full reader
    must answer: a record that is damaged, copied from another run, has stages, or holds a value of an
    unexpected type (the full reader names what is wrong)."""
    from tinytitan.config import read_toml
    from tinytitan.run.record import Run, edited_since_launch, record_of, warn
    from tinytitan.run.record_check import copied_from, record_problem

    record = record_of(where)
    if record is None:
        return {"run_record": None, "trained_flavor": None, "seq_len": None, "sources": None, "precision": None}
    if record_problem(record) is not None:
        return None
    try:
        doc = read_toml(record)
        job, model, training, data = (doc.get(k, {}) for k in ("job", "model", "training", "data"))
        if copied_from(record, job.get("dump_folder", ""), where) is not None or data.get("stages"):
            return None
        flavor, seq_len, param = model["flavor"], training["seq_len"], training["mixed_precision_param"]
        raw = {s["name"]: 1.0 if s.get("weight") is None else s["weight"] for s in data.get("sources", [])}
        run = Run(segments=doc.get("run", {}).get("segments", []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, TinytitanError):
        return None
    kinds = [(flavor, str), (seq_len, int), (param, str), *((w, (int, float)) for w in raw.values())]
    if any(isinstance(v, bool) or not isinstance(v, t) for v, t in kinds) or sum(raw.values()) <= 0:
        return None
    segment = run.segment_at(step)
    if segment is not None and segment.precision:
        precision = segment.precision
    elif param == "float32":
        precision = "float32"
    else:
        precision = f"{param} mixed precision (float32 master weights)"
    if (edit := edited_since_launch(record)) is not None:
        warn(edit)  # as the full reader does (tinytitan.run.record.read_trained_run), once: no fallback below
    return {
        "run_record": str(record),
        "trained_flavor": flavor,
        "seq_len": seq_len,
        "sources": [{"name": n, "weight": w / sum(raw.values())} for n, w in raw.items()],
        "precision": precision,
    }


def list_steps(path: str | os.PathLike) -> list[dict]:
    """Every step-N folder of a run or checkpoint folder, complete or not: what ``--all`` prints."""
    path = Path(path)
    folders = all_step_folders(path) or all_step_folders(path / "checkpoint")
    if not folders:
        raise TinytitanError(f"{path} has no step-N folders: pass a run folder or its checkpoint folder")
    rows = []
    for step, folder in folders:
        problem = folder_problem(folder)
        rows.append({"step": step, "path": str(folder), "complete": problem is None, "problem": problem,
                     "size_on_disk": folder_bytes(folder)})  # fmt: skip
    return rows


def format_steps(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        state = "complete" if row["complete"] else f"INCOMPLETE: {row['problem']}; a resume skips it"
        lines.append(f"step-{row['step']:<8} {_size(row['size_on_disk']):>10}  {state}")
    return "\n".join(lines)


def _trained(info: dict) -> str:
    if info["run_record"] is None:
        return "no run record (run.toml) next to it: export and eval need --config"
    data = ", ".join(f"{d['name']} {d['weight']:.0%}" for d in info["sources"] or [])
    return f"seq_len {info['seq_len']}, {data or 'no data sources'}, {info['precision']} ({info['run_record']})"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


EMA_TEXT = "yes: an average of the weights ([ema]); export, eval and generate take --weights ema"


def format_report(info: dict) -> str:
    layout = {"flat": "flat (torchtitan >= 0.2)", "prefixed": 'prefixed ("model." keys, torchtitan < 0.2)'}[
        info["layout"]
    ]
    if info["freqs_cis"]:
        layout += ", with a persisted freqs_cis"
    missing = [k for k in ("optimizer", "lr_scheduler", "dataloader", "train_state") if not info[k]]
    resume = "yes" if info["resumable"] else f"no (missing: {', '.join(missing)}); it can only initialise a new run"
    if not info["complete"]:
        resume = f"no: the folder is incomplete ({info['problem']})"
    tokens = "unknown"
    if info["ntokens_seen"] is not None:
        tokens = f"{info['ntokens_seen']:,} (all ranks, from metrics.jsonl)"
    elif info["ntokens_per_rank"] is not None:
        tokens = f"{info['ntokens_per_rank']:,} per data-parallel rank (train_state)"
    rows = [
        ("checkpoint", info["path"]),
        ("step", info["step"] if info["step"] is not None else "unknown"),
        ("tokens seen", tokens),
        ("last loss", f"{info['last_loss']:.4f}" if info["last_loss"] is not None else "unknown"),
        ("layout", layout),
        ("flavor", info["flavor"] or "none in tinytitan/models.py fits these shapes"),
        ("parameters", f"{info['parameters']:,} in {info['model_tensors']} tensors"),
        ("dtypes", ", ".join(f"{k} x{v}" for k, v in sorted(info["dtypes"].items()))),
        ("model size", _size(info["model_bytes"])),
        ("size on disk", _size(info["size_on_disk"])),
        ("can resume", resume),
        ("EMA weights", EMA_TEXT if info["ema"] else "no"),
        ("health", describe_health(info.get("health"))),
        ("trained with", _trained(info)),
    ]
    data = info.get("data")
    if data:
        total = sum(data["tokens_per_source"].values()) or 1
        rows.append(("data tokens", ", ".join(f"{name} {n:,} ({n / total:.1%})"
                                              for name, n in data["tokens_per_source"].items())))  # fmt: skip
        if data["stage"] is not None:
            st = data["stages"][data["stage_index"]]
            end = "the end of the run" if st["last_step"] is None else f"step {st['last_step']}"
            rows.append(("data stage", f"{st['name']} ({data['stage_index'] + 1} of {len(data['stages'])}, steps "
                                       f"{st['first_step']} to {end})"))  # fmt: skip
            for stage in data["stages"]:  # in the recipe's order, the stages begun so far
                per_source = data["stage_tokens"].get(stage["name"])
                if per_source:
                    rows.append((f"  stage {stage['name']}", ", ".join(f"{s} {n:,}" for s, n in per_source.items())))
    if info["needs_upgrade"]:
        rows.append(("upgrade", "run `tinytitan checkpoint upgrade OLD NEW` before resuming with torchtitan 0.2.2"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def run(args) -> int:
    if getattr(args, "all", False):
        rows = list_steps(args.checkpoint)
        print(json.dumps(rows, indent=2) if args.json else format_steps(rows))
        return 0
    info = inspect_checkpoint(args.checkpoint, args.step)
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0

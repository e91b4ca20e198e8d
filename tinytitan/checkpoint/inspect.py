"""``tinytitan checkpoint inspect``: what a checkpoint holds, from its metadata alone.

Reads ``.metadata`` and the few small values of ``train_state``; no weights are
loaded, so it answers in seconds for any model size.
"""

from __future__ import annotations

import json
import os

from tinytitan.checkpoint.flavors import fitting_flavor
from tinytitan.checkpoint.reader import open_checkpoint
from tinytitan.checkpoint.stats import checkpoint_stats


def inspect_checkpoint(path: str | os.PathLike, step: int | str | None = None) -> dict:
    """A JSON-ready description; the keys are those ``--json`` prints."""
    ckpt = open_checkpoint(path, step, check=False)  # a truncated one is reported, not refused
    short = ckpt.short_files()
    stats = checkpoint_stats(ckpt)
    params = sum(e.numel for e in ckpt.model.values())
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
        "complete": not short,
        "short_files": [{"file": name, "bytes": have, "needed": end} for name, have, end in short],
        "resumable": ckpt.resumable and not short,
    }


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def format_report(info: dict) -> str:
    layout = {"flat": "flat (torchtitan >= 0.2)", "prefixed": 'prefixed ("model." keys, torchtitan < 0.2)'}[
        info["layout"]
    ]
    if info["freqs_cis"]:
        layout += ", with a persisted freqs_cis"
    missing = [k for k in ("optimizer", "lr_scheduler", "dataloader", "train_state") if not info[k]]
    if info["short_files"]:
        first = info["short_files"][0]
        resume = (
            f"no: incomplete, {first['file']} has {first['bytes']:,} of {first['needed']:,} bytes "
            f"({len(info['short_files'])} short file(s)); copy it again or use an earlier step"
        )
    elif info["resumable"]:
        resume = "yes"
    else:
        resume = f"no (missing: {', '.join(missing)}); it can only initialise a new run"
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
    ]
    if info["needs_upgrade"]:
        rows.append(("upgrade", "run `tinytitan checkpoint upgrade OLD NEW` before resuming with torchtitan 0.2.2"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def run(args) -> int:
    info = inspect_checkpoint(args.checkpoint, args.step)
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0

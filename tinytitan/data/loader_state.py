"""The data loader's checkpoint document: what it holds, how the ranks' parts merge, when it may resume.

A run must resume its data stream exactly, on any number of dp ranks and loader workers, and
must refuse a checkpoint whose stream cannot continue under the current ``[data]`` config.
Those rules are about the saved document, not about how batches are produced, so they live
here, apart from the iterator and its worker processes (``tinytitan.data.loader``), and
without torch.

The document is one JSON string under ``STATE_KEY``, identical on every rank (DCP stores it
once): the format version, the plan's fingerprint, the layout that wrote it, the windows
and batches consumed, every lane's position per source, and the unreadable files met.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tinytitan.data.plan import MixturePlan
from tinytitan.errors import TinytitanError

logger = logging.getLogger("tinytitan.data")

STATE_KEY = "tinytitan_data"
STATE_VERSION = 1


def dump_state(st: dict) -> dict[str, Any]:
    """The loader's ``state_dict()``: the document as one compact JSON string under ``STATE_KEY``."""
    return {STATE_KEY: json.dumps(st, sort_keys=True, separators=(",", ":"))}


def load_state(state_dict: dict[str, Any]) -> dict:
    """The document inside a (non-empty) loaded ``state_dict``; refuses another loader's state or version."""
    if STATE_KEY not in state_dict:
        raise TinytitanError(
            f"the checkpoint's dataloader state has keys {sorted(state_dict)[:4]}, not tinytitan's data "
            "loader state; resume with --checkpoint.exclude_from_loading dataloader to restart the data stream"
        )
    blob = state_dict[STATE_KEY]
    st = json.loads(blob.decode() if isinstance(blob, bytes) else blob)
    if st.get("version") != STATE_VERSION:
        raise TinytitanError(f"data loader state version {st.get('version')} is not {STATE_VERSION}")
    return st


def merge_states(plan: MixturePlan, layout: dict, parts: list[dict]) -> dict:
    """The run's document from the local states of its dp ranks (``layout``: the writing loaders' layout)."""
    dp_world_size = layout["dp_world_size"]
    by_rank: dict[int, dict] = {}
    for p in parts:
        by_rank.setdefault(p["rank"], p)  # ranks of the same dp rank (TP/PP) hold the same state
    if sorted(by_rank) != list(range(dp_world_size)):
        raise RuntimeError(
            f"data loader state: got dp ranks {sorted(by_rank)} of {dp_world_size}; without "
            "torch.distributed, combine the ranks' local_state_dict() with merge_rank_states()"
        )
    windows = {p["windows"] for p in by_rank.values()}
    if len(windows) != 1:
        logger.warning("data loader state: dp ranks consumed different numbers of batches: %s", windows)
    lanes: dict[str, dict] = {s.name: {} for s in plan.sources}
    errors: set[str] = set()
    for rank in sorted(by_rank):
        for name, ls in by_rank[rank]["lanes"].items():
            lanes[name].update(ls)
        errors.update(by_rank[rank]["errors"])
    for name in lanes:
        lanes[name] = {k: lanes[name][k] for k in sorted(lanes[name], key=int)}
    return {
        "version": STATE_VERSION,
        "fingerprint": plan.fingerprint(),
        "layout": layout,
        "weights": {s.name: s.weight for s in plan.sources},
        "windows": by_rank[0]["windows"],
        "batches": by_rank[0]["batches"],
        "lanes": lanes,
        "errors": sorted(errors),
    }


def warn_on_weight_change(saved: dict | None, plan: MixturePlan) -> str | None:
    """One warning line when the mixture weights differ from the checkpoint's (allowed: it may be deliberate)."""
    now = {s.name: s.weight for s in plan.sources}
    if not saved or all(abs(saved.get(name, -1.0) - w) < 1e-9 for name, w in now.items()):
        return None
    changes = ", ".join(f"{name} {saved.get(name, 0.0):.4f} -> {w:.4f}" for name, w in now.items())
    message = (
        f"data: the mixture weights changed since the checkpoint ({changes}); "
        "the stream continues with the new weights from here"
    )
    logger.warning(message)
    return message


def check_fingerprint(saved: dict, now: dict) -> None:
    """Refuses to resume when the seed, the lanes, the sources or a source's files/filter/split changed."""
    hint = (
        "resume with the same [data] config, or restart the data stream with "
        "--checkpoint.exclude_from_loading dataloader"
    )
    if saved["seed"] != now["seed"]:
        raise TinytitanError(f"data.seed changed since the checkpoint ({saved['seed']} -> {now['seed']}); {hint}")
    if saved["lanes"] != now["lanes"]:
        raise TinytitanError(f"data.lanes changed since the checkpoint ({saved['lanes']} -> {now['lanes']}); {hint}")
    if set(saved["sources"]) != set(now["sources"]):
        raise TinytitanError(
            f"data sources changed since the checkpoint ({sorted(saved['sources'])} -> {sorted(now['sources'])}); "
            f"{hint}"
        )
    for name, fp in now["sources"].items():
        if saved["sources"][name] != fp:
            raise TinytitanError(
                f"data source {name!r}: its files, filter or held-out split changed since the checkpoint; {hint}"
            )

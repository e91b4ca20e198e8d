"""The data loader's checkpoint document: what it holds, how the ranks' parts merge, when it may resume.

A run must resume its data stream exactly, on any number of dp ranks and loader workers, and
must refuse a checkpoint whose stream cannot continue under the current ``[data]`` config.
Those rules are about the saved document, not about how batches are produced, so they live
here, apart from the iterator and its worker processes (``tinytitan.data.loader``), and
without torch.

The document is one JSON string under ``STATE_KEY``, identical on every rank (DCP stores it
once): a ``LoaderState`` saved as a dict with its format version. Version 1 (checkpoints
written before 2026-12-02) kept each lane as a list of 13 integers in ``LaneState``'s field
order; it is read and upgraded on load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tinytitan.data.plan import MixturePlan
from tinytitan.errors import TinytitanError

logger = logging.getLogger("tinytitan.data")

STATE_KEY = "tinytitan_data"
STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)
_RESTART = "restart the data stream with --checkpoint.exclude_from_loading dataloader"


@dataclass(slots=True)
class LaneState:
    """One lane of one source: where its next token is, how far it has counted, and its counters."""

    serving_pass: int = 0  # the pass this lane serves; a reader uses its lanes in (serving_pass, lane id) order
    next_pass: int = 0  # the first token no window has taken: its pass,
    next_part: int = 0  # its part (an index into the lane's parts of that pass),
    next_doc: int = 0  # its document in that part,
    next_token: int = 0  # and its offset in that document's BOS ... EOS tokens
    counted_pass: int = 0  # every document before (pass, part, doc) has been read and counted:
    counted_part: int = 0  # a resume re-reads from next_* and does not count those again
    counted_doc: int = 0
    tokens: int = 0  # tokens served in windows
    docs: int = 0  # documents read
    empty_docs: int = 0  # documents with no text
    excluded_docs: int = 0  # documents the source's exclude filter dropped
    unreadable_files: int = 0  # files that could not be read (skipped with data.on_error = "skip")


LANE_FIELDS = tuple(f.name for f in fields(LaneState))
Lanes = dict[str, dict[int, LaneState]]  # source name -> lane id -> state


@dataclass
class RankState:
    """One dp rank's part, gathered from every rank when a checkpoint is saved."""

    rank: int
    windows: int  # global windows (over all ranks) consumed when this rank took its last batch
    batches: int  # batches this rank has consumed
    lanes: Lanes  # the lanes of this rank's readers
    unreadable: list[str]  # files met that could not be read


@dataclass
class Layout:
    """The loaders that wrote a state; another layout resumes by re-dealing the lanes."""

    dp_world_size: int
    workers: int  # readers per dp rank (loader worker processes, or 1 in-process)
    batch_size: int
    seq_len: int


@dataclass
class LoaderState:
    """The whole run's data stream, as saved in a checkpoint."""

    fingerprint: dict  # MixturePlan.fingerprint(): what must not change for the stream to continue
    layout: Layout
    weights: dict[str, float]  # the mixture weights when saved (a change is allowed, with a warning)
    windows: int
    batches: int
    lanes: Lanes
    unreadable: list[str] = field(default_factory=list)
    version: int = STATE_VERSION

    def to_json(self) -> str:
        doc = asdict(self)
        doc["lanes"] = {name: {str(lid): asdict(st) for lid, st in ls.items()} for name, ls in self.lanes.items()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> LoaderState:
        doc = json.loads(text.decode() if isinstance(text, bytes) else text)
        version = doc.get("version")
        if version not in READABLE_VERSIONS:
            raise TinytitanError(
                f"data loader state version {version} is not one this tinytitan reads "
                f"({', '.join(map(str, READABLE_VERSIONS))}): "
                f"resume with the tinytitan that wrote the checkpoint, or {_RESTART}"
            )
        if version == 1:
            doc = _upgrade_v1(doc)
        lanes = {name: {int(lid): LaneState(**st) for lid, st in ls.items()} for name, ls in doc["lanes"].items()}
        return cls(
            fingerprint=doc["fingerprint"],
            layout=Layout(**doc["layout"]),
            weights=doc.get("weights") or {},
            windows=int(doc["windows"]),
            batches=int(doc["batches"]),
            lanes=lanes,
            unreadable=list(doc.get("unreadable", [])),
        )


def _upgrade_v1(doc: dict) -> dict:
    """Version 1 kept a lane as 13 integers in LaneState's field order and the files under "errors"."""
    lanes = {}
    for name, ls in doc["lanes"].items():
        for lid, row in ls.items():
            if len(row) != len(LANE_FIELDS):
                raise TinytitanError(
                    f"data loader state version 1: lane {lid} of {name!r} has {len(row)} fields, not "
                    f"{len(LANE_FIELDS)}; the checkpoint is damaged: {_RESTART}"
                )
        lanes[name] = {lid: dict(zip(LANE_FIELDS, row, strict=True)) for lid, row in ls.items()}
    return {**doc, "version": STATE_VERSION, "lanes": lanes, "unreadable": doc.get("errors", [])}


def dump_state(state: LoaderState) -> dict[str, Any]:
    """The loader's ``state_dict()``: the document as one compact JSON string under ``STATE_KEY``."""
    return {STATE_KEY: state.to_json()}


def load_state(state_dict: dict[str, Any]) -> LoaderState:
    """The document inside a (non-empty) loaded ``state_dict``; refuses another loader's state or version."""
    if STATE_KEY not in state_dict:
        raise TinytitanError(
            f"the checkpoint's dataloader state has keys {sorted(state_dict)[:4]}, not tinytitan's data "
            "loader state; resume with --checkpoint.exclude_from_loading dataloader to restart the data stream"
        )
    return LoaderState.from_json(state_dict[STATE_KEY])


def merge_states(plan: MixturePlan, layout: Layout, parts: list[RankState]) -> LoaderState:
    """The run's document from the local states of its dp ranks (``layout``: the writing loaders' layout)."""
    by_rank: dict[int, RankState] = {}
    for p in parts:
        by_rank.setdefault(p.rank, p)  # ranks of the same dp rank (TP/PP) hold the same state
    if sorted(by_rank) != list(range(layout.dp_world_size)):
        raise RuntimeError(
            f"data loader state: got dp ranks {sorted(by_rank)} of {layout.dp_world_size}; without "
            "torch.distributed, combine the ranks' local_state_dict() with merge_rank_states()"
        )
    windows = {p.windows for p in by_rank.values()}
    if len(windows) != 1:
        logger.warning("data loader state: dp ranks consumed different numbers of batches: %s", windows)
    lanes: Lanes = {s.name: {} for s in plan.sources}
    unreadable: set[str] = set()
    for rank in sorted(by_rank):
        for name, ls in by_rank[rank].lanes.items():
            lanes[name].update(ls)
        unreadable.update(by_rank[rank].unreadable)
    return LoaderState(
        fingerprint=plan.fingerprint(),
        layout=layout,
        weights={s.name: s.weight for s in plan.sources},
        windows=by_rank[0].windows,
        batches=by_rank[0].batches,
        lanes={name: dict(sorted(ls.items())) for name, ls in lanes.items()},
        unreadable=sorted(unreadable),
    )


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


def note_seq_len_change(saved: Layout, seq_len: int) -> str | None:
    """One log line when the run resumes with another sequence length (allowed: long-context extension
    changes it on purpose). Windows are cut at the new length from where the stream stopped."""
    if saved.seq_len == seq_len:
        return None
    message = (
        f"data: training.seq_len changed since the checkpoint ({saved.seq_len} -> {seq_len}); "
        "the stream continues where it stopped, in windows of the new length"
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

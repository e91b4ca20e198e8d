"""The data loader's checkpoint document: what it holds, how the ranks' parts merge, when it may resume.

A run must resume its data stream exactly, on any number of dp ranks and loader workers, and
must refuse a checkpoint whose stream cannot continue under the current ``[data]`` config.
Those rules are about the saved document, not about how batches are produced, so they live
here, apart from the iterator and its worker processes (``tinytitan.data.loader``), and
without torch.

The document is one JSON string under ``STATE_KEY``, identical on every rank (DCP stores it
once): a ``LoaderState`` saved as a dict with its format version. Version 3 adds the stages
of the recipe (``StageRecord``) and the tokens per source of each stage. Version 2 (no stages)
and version 1 (checkpoints written before 2026-12-02, each lane a list of 13 integers in
``LaneState``'s field order) are read and upgraded on load.

A resume may change stages that have not begun; a stage that has begun must be as it ran
(``check_stage_change``), unless ``data.allow_stage_change`` says the change is deliberate.
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
STATE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
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


@dataclass(frozen=True)
class StageRecord:
    """One stage of the recipe as the stream ran it: the global windows it covers and its weights."""

    name: str  # "" for the one mixture of a run without stages
    first_window: int
    end_window: int | None  # the first window after the stage; None: the last stage, to the end of the run
    weights: dict[str, float]  # normalized, every source (0: not in this stage)
    first_step: int = 1  # the same span in optimizer steps, for people (inspect, messages)
    last_step: int | None = None

    def describe(self) -> str:
        end = " to the end of the run" if self.last_step is None else f"-{self.last_step}"
        return f"steps {self.first_step}{end}, " + ", ".join(
            f"{name} {w:.3f}" for name, w in self.weights.items() if w > 0
        )


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
    stages: list[StageRecord] = field(default_factory=list)  # empty: a run without [[data.stages]]
    stage_tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> source -> tokens
    version: int = STATE_VERSION

    def to_json(self) -> str:
        doc = asdict(self)
        doc["lanes"] = {name: {str(lid): asdict(st) for lid, st in ls.items()} for name, ls in self.lanes.items()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    def stage_at(self) -> StageRecord | None:
        """The stage of the last window consumed (None without stages or before any window)."""
        for stage in self.stages:
            if stage.first_window < self.windows and (stage.end_window is None or self.windows <= stage.end_window):
                return stage
        return None

    def tokens_per_source(self) -> dict[str, int]:
        return {name: sum(st.tokens for st in ls.values()) for name, ls in self.lanes.items()}

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
        if doc["version"] == 2:
            doc = {**doc, "version": STATE_VERSION, "stages": [], "stage_tokens": {}}  # 2 had no stages
        lanes = {name: {int(lid): LaneState(**st) for lid, st in ls.items()} for name, ls in doc["lanes"].items()}
        return cls(
            fingerprint=doc["fingerprint"],
            layout=Layout(**doc["layout"]),
            weights=doc.get("weights") or {},
            windows=int(doc["windows"]),
            batches=int(doc["batches"]),
            lanes=lanes,
            unreadable=list(doc.get("unreadable", [])),
            stages=[StageRecord(**st) for st in doc["stages"]],
            stage_tokens={k: {n: int(t) for n, t in v.items()} for k, v in doc["stage_tokens"].items()},
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
    return {**doc, "version": 2, "lanes": lanes, "unreadable": doc.get("errors", [])}


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


def merge_states(
    plan: MixturePlan,
    layout: Layout,
    parts: list[RankState],
    stages: list[StageRecord],
    stage_tokens: dict[str, dict[str, int]],
) -> LoaderState:
    """The run's document from the local states of its dp ranks (``layout``: the writing loaders' layout);
    ``stages`` and ``stage_tokens`` are the run's (the same on every rank)."""
    by_rank: dict[int, RankState] = {}
    for p in parts:
        by_rank.setdefault(p.rank, p)  # ranks of the same dp rank (TP/PP) hold the same state
    if sorted(by_rank) != list(range(layout.dp_world_size)):
        raise RuntimeError(
            f"data loader state: got dp ranks {sorted(by_rank)} of {layout.dp_world_size}; the state of a "
            "run of several dp ranks is gathered over torch.distributed (call state_dict() on every rank)"
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
        stages=list(stages),
        stage_tokens=stage_tokens,
    )


def weight_change(saved: dict | None, now: dict[str, float]) -> str | None:
    """The line to log when the mixture weights of a run without stages differ from the checkpoint's
    (allowed: it may be deliberate); None when they do not."""
    if not saved or all(abs(saved.get(name, -1.0) - w) < 1e-9 for name, w in now.items()):
        return None
    changes = ", ".join(f"{name} {saved.get(name, 0.0):.4f} -> {w:.4f}" for name, w in now.items())
    return (
        f"data: the mixture weights changed since the checkpoint ({changes}); "
        "the stream continues with the new weights from here"
    )


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


# ---------------------------------------------------------------- stages on resume


def _stage_difference(old: StageRecord, new: StageRecord | None, windows: int) -> str | None:
    """How ``new`` differs from the saved ``old`` as far as the stream already run is concerned; None: it does not."""
    if new is None:
        return "it was removed"
    diffs = []
    if old.name and new.name and old.name != new.name:
        diffs.append(f"renamed to {new.name!r}")
    names = sorted(set(old.weights) | set(new.weights))
    if any(abs(old.weights.get(n, 0.0) - new.weights.get(n, 0.0)) > 1e-9 for n in names):
        changed = ", ".join(
            f"{n} {old.weights.get(n, 0.0):.3f} -> {new.weights.get(n, 0.0):.3f}"
            for n in names
            if abs(old.weights.get(n, 0.0) - new.weights.get(n, 0.0)) > 1e-9
        )
        diffs.append(f"weights {changed}")
    if old.first_window != new.first_window:
        diffs.append(f"it now starts at step {new.first_step}, not {old.first_step}")
    if old.end_window != new.end_window:
        opened_later = old.end_window is None and new.end_window is not None and new.end_window > windows
        if not opened_later:
            old_end = "the end of the run" if old.last_step is None else f"step {old.last_step}"
            new_end = "the end of the run" if new.last_step is None else f"step {new.last_step}"
            diffs.append(f"it now ends at {new_end}, not {old_end}")
    return "; ".join(diffs) or None


def stage_changes(saved: LoaderState, now: list[StageRecord]) -> tuple[list[str], list[str]]:
    """(changes of stages the checkpoint's stream has begun, changes of stages it has not), each
    ``data stage 'x': <what changed>``; both empty for a run without stages then and now."""
    if not saved.stages and all(not s.name for s in now):
        return [], []
    old = saved.stages or [StageRecord("", 0, None, dict(saved.weights))]  # the one mixture of a run without stages
    begun: list[str] = []
    later: list[str] = []
    for i, stage in enumerate(old):
        new = now[i] if i < len(now) else None
        diff = _stage_difference(stage, new, saved.windows)
        if diff is None:
            continue
        label = f"data stage {stage.name!r}" if stage.name else "the mixture (no stages then)"
        (begun if stage.first_window < saved.windows else later).append(f"{label}: {diff}")
    for new in now[len(old) :]:
        later.append(f"data stage {new.name!r} is new ({new.describe()})")
    return begun, later


def check_stage_change(saved: LoaderState, now: list[StageRecord], step: int, allow: bool) -> list[str]:
    """Refuses (one line) a resume that changes a stage the checkpoint's stream has already begun, unless
    ``allow``; returns the log lines to print: stages changed before they began (allowed), or the allowed
    change of a begun stage. ``step``: the checkpoint's optimizer step, for the messages."""
    if not saved.stages and all(not s.name for s in now):  # a run without stages, then and now
        line = weight_change(saved.weights, now[0].weights)
        return [line] if line else []
    begun, later = stage_changes(saved, now)
    lines = []
    if begun:
        what = (
            f"{begun[0]}, a stage the checkpoint of step {step} has already begun; a begun stage must stay as it "
            "ran (the data and the LR it already trained on)"
        )
        if not allow:
            raise TinytitanError(
                f"{what}: restore it in the config, or resume with --data.allow_stage_change to continue with "
                "the changed stages from here"
            )
        lines.append(f"data: {what}; continuing with the changed stages (data.allow_stage_change)")
    if later:
        lines.append(f"data: stages changed since the checkpoint of step {step}, before they began: {'; '.join(later)}")
    return lines

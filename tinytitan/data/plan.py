"""The read plan of a mixture: for every source its files, parts and pass order.

Everything here is a pure function of the config and the file listing, so every rank
(and every loader worker) computes the same plan without talking to the others.

A pass over a source visits every part once, in an order shuffled by
(seed, source, pass). Lane ``l`` of ``L`` owns the parts at positions ``l, l+L, l+2L, ...``
of that order. Lanes are dealt to readers (dp ranks x loader workers) round-robin, so
which documents make up a pass never depends on the number of readers.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from tinytitan.data.config import Data, Source
from tinytitan.data.files import FileInfo, Filter, Opener, Part, file_info, row_range
from tinytitan.data.listing import hub_repo, list_files


@dataclass
class SourcePlan:
    index: int
    name: str
    weight: float  # normalized; with stages the mean over the stages (Data.mixture_weights)
    path: str
    files: list[FileInfo]
    parts: list[Part]
    text_field: str
    exclude: dict[str, list[str]]
    holdout_docs: int = 0  # first N raw documents of files[0] are held out (validation_docs)
    opener: Opener = field(default=None, repr=False)

    def filter(self) -> Filter:
        return Filter(self.text_field, self.exclude)

    def fingerprint(self) -> str:
        blob = json.dumps(
            {
                "name": self.name,
                "files": [(f.rel, f.size, f.row_groups) for f in self.files],
                "parts": len(self.parts),
                "text_field": self.text_field,
                "exclude": self.exclude,
                "holdout": self.holdout_docs,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def segment_rows(self, part: Part) -> int | None:
        """Rows of the part's parquet row group; None for a line file (strided parts)."""
        info = self.files[part.file]
        if info.row_groups is None:
            return None
        return info.row_groups[part.segment] if part.segment < len(info.row_groups) else 0

    def holdout_t(self, part: Part) -> int:
        """Documents of the part before this index are held out (validation_docs)."""
        if not self.holdout_docs or part.file != 0:
            return 0
        rows = self.segment_rows(part)
        if rows is None:  # strided: raw = t * count + index
            return max(0, -(-(self.holdout_docs - part.index) // part.count))
        before = sum(self.files[0].row_groups[: part.segment])
        lo, _ = row_range(rows, part.index, part.count)
        return max(0, self.holdout_docs - before - lo)


def make_parts(files: list[FileInfo], lanes: int) -> list[Part]:
    """Split segments so that every lane gets at least one part per pass."""
    segments = [(i, s) for i, f in enumerate(files) for s in range(f.segments)]
    count = max(1, math.ceil(lanes / max(1, len(segments))))
    return [Part(i, s, j, count) for i, s in segments for j in range(count)]


def source_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) & 0xFFFFFFFF


@lru_cache(maxsize=64)
def _pass_order(seed: int, name: str, n_parts: int, pass_: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64([source_seed(seed, name), pass_, 0x7417A7]))
    return rng.permutation(n_parts)


def lane_parts(seed: int, plan: SourcePlan, lanes: int, lane: int, pass_: int) -> np.ndarray:
    """Indices into plan.parts that `lane` reads in `pass_`, in reading order."""
    return _pass_order(seed, plan.name, len(plan.parts), pass_)[lane::lanes]


@dataclass
class MixturePlan:
    seed: int
    lanes: int
    sources: list[SourcePlan]
    on_error: str = "skip"

    def fingerprint(self) -> dict:
        return {
            "seed": self.seed,
            "lanes": self.lanes,
            "sources": {s.name: s.fingerprint() for s in self.sources},
        }


def _source_plan(index: int, source: Source, weight: float, files: list[FileInfo], lanes: int) -> SourcePlan:
    repo = hub_repo(source.path)
    return SourcePlan(
        index=index,
        name=source.name,
        weight=weight,
        path=source.path,
        files=files,
        parts=make_parts(files, lanes),
        text_field=source.text_field,
        exclude={k: list(v) for k, v in source.exclude.items()},
        holdout_docs=source.validation_docs,
        opener=Opener(source.path, repo),
    )


def build_plan(data: Data, file_lists: dict[str, list[str]] | None = None) -> MixturePlan:
    """The plan for text format: lists files (and parquet row groups) of every source."""
    weights = data.mixture_weights()
    sources = []
    for i, s in enumerate(data.sources):
        rels = file_lists[s.name] if file_lists is not None else list_files(s.path, s.files)
        opener = Opener(s.path, hub_repo(s.path))
        infos = [file_info(opener, r) for r in rels]
        sources.append(_source_plan(i, s, weights[s.name], infos, data.lanes))
    return MixturePlan(seed=data.seed, lanes=data.lanes, sources=sources, on_error=data.on_error)


def plan_from_infos(data: Data, infos: dict[str, list[FileInfo]]) -> MixturePlan:
    weights = data.mixture_weights()
    sources = [_source_plan(i, s, weights[s.name], infos[s.name], data.lanes) for i, s in enumerate(data.sources)]
    return MixturePlan(seed=data.seed, lanes=data.lanes, sources=sources, on_error=data.on_error)

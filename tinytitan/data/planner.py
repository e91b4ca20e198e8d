"""The plan of a ``[data]`` config, made once per process and shared by the loader and the validator.

Text format: list every training file and stat it (parquet: read its footer) -- with
SlimPajama's 59k files the slow part of a rank's start (docs/data.md), so it is done once.
Tokens format: read the prepared shards' manifest (checked against the tokenizer each time).
"""

from __future__ import annotations

import dataclasses
import json

from tinytitan.data.config import Data
from tinytitan.data.listing import list_sources
from tinytitan.data.plan import MixturePlan, build_plan

_TEXT_PLANS: dict[str, MixturePlan] = {}  # per process: the loader and the validator share one listing


def make_plan(data: Data, tokenizer=None, files: dict[str, list[str]] | None = None) -> MixturePlan:
    """The mixture plan; a text plan (listing every file, reading parquet footers) is built once per process.

    With SlimPajama's ~59k files the listing is the slow part of a rank's start (docs/data.md);
    the validator and the loader of one rank get the same plan object. ``files``: every source's files as
    already listed (the launcher's data check), so that they are not listed again.
    """
    if data.format == "tokens":
        from tinytitan.data.shards import plan_from_prepared

        return plan_from_prepared(data, tokenizer)
    key = json.dumps(dataclasses.asdict(data), sort_keys=True, default=str)
    if key not in _TEXT_PLANS:
        data.validate()
        _TEXT_PLANS[key] = build_plan(data, files if files is not None else list_sources(data))
    return _TEXT_PLANS[key]

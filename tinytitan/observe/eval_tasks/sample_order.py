"""The data of the shipped task ``tinytitan_sample_order``, read from the file next to this one.

lm-eval calls ``load`` (the YAML's ``custom_dataset``) instead of downloading from the Hub,
so the task runs offline. ``util/make_eval_task.py`` writes ``sample_order.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "sample_order.jsonl"


def load(**_metadata):
    import datasets

    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

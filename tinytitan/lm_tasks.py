"""What lm-eval runs (``TaskSettings``): the same for ``tinytitan eval tasks``, a whole run and the ``[eval]``
section of the training loop. Low in the layers so that the config sections can name it without
importing the evaluation itself (``tinytitan.observe.task_eval``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tinytitan.errors import TinytitanError

DEFAULT_BATCH_SIZE = 16


@dataclass
class TaskSettings:
    """What lm-eval runs: the same for the CLI, a whole run and the training loop."""

    tasks: list[str]
    include_path: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self):
        if not self.tasks:
            raise TinytitanError("--tasks is empty: name at least one lm-eval task, e.g. tinytitan_sample_order")
        for name, value in (("limit", self.limit), ("batch_size", self.batch_size)):
            if value is not None and value < 1:
                raise TinytitanError(f"{name} {value} must be at least 1")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise TinytitanError(f"num_fewshot {self.num_fewshot} must be 0 or more")


def parse_tasks(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return [t.strip() for t in items if t.strip()]

"""Third-party progress bars only on a terminal.

``eval`` and ``generate`` run transformers, huggingface_hub, datasets and lm-eval, which draw tqdm bars
("Loading weights", "Map", lm-eval's request bars) whether or not anyone watches. ``third_party(progress)``
turns them off, through each library's public switch, when ``progress`` is false (``--no-progress``, or
stderr is not a terminal), and leaves them on otherwise; lm-eval's HFLM gets ``disable_tqdm``
(``tinytitan.observe.harness.hf_harness_model``), and bars made with no ``disable`` at all follow
``TQDM_DISABLE``, set by ``tinytitan.cli`` before anything imports tqdm (``tqdm_default_off``). lm-eval's
INFO lines go with them; its warnings stay, but for its ``--metadata`` hint about our own task.
lm-eval's `git describe` (``fatal: not a git repository`` outside a checkout) is quiet always
(``tinytitan.compat.lm_eval_quiet_git``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys


def wanted(no_progress: bool = False) -> bool:
    """Progress bars: on a terminal, unless ``--no-progress``."""
    return not no_progress and sys.stderr.isatty()


@contextlib.contextmanager
def third_party(progress: bool):
    """While open, third-party progress bars show only if ``progress``."""
    hint = logging.getLogger("lm_eval.api.task")
    hint.addFilter(_own_task_hint)
    try:
        if progress:
            yield
        else:
            with _bars_off():
                yield
    finally:
        hint.removeFilter(_own_task_hint)


def _own_task_hint(record: logging.LogRecord) -> bool:
    """lm-eval's hint about `--metadata` for every task with a custom dataset, ours included: not for our users."""
    return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


@contextlib.contextmanager
def _bars_off():
    undo = []
    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        undo.append(hf_logging.enable_progress_bar)
    if importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        disable_progress_bars()
        undo.append(enable_progress_bars)
    if importlib.util.find_spec("datasets") is not None:
        import datasets

        datasets.disable_progress_bars()
        undo.append(datasets.enable_progress_bars)
    quieted = [logging.getLogger(name) for name in ("lm_eval", "lm-eval")]
    levels = [log.level for log in quieted]
    for log in quieted:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(quieted, levels, strict=True):
            log.setLevel(level)
        for enable in undo:
            enable()


def tqdm_default_off(stderr_is_tty: bool) -> None:
    """Before anything imports tqdm (``tinytitan.cli`` calls it first): without a terminal, a bar made with no
    explicit ``disable`` (lm-eval's "building requests") is off. tqdm reads ``TQDM_DISABLE`` once, at import;
    a value the user set wins."""
    if not stderr_is_tty:
        os.environ.setdefault("TQDM_DISABLE", "1")

"""lm-evaluation-harness on torchtitan's own model: no export needed, in one process or on every training rank.

``TitanLM`` is an ``lm_eval`` ``TemplateLM`` over a logits function (token ids [B, T] -> logits
[B, T, vocab]) and the tokenizer training used. Text becomes ids as in training: every
document starts with BOS (contexts are ``BOS context``; an empty context is BOS alone;
``loglikelihood_rolling`` scores a document after BOS). lm-eval's ``HFLM`` on an export does the
same for loglikelihood when built with ``add_bos_token=True`` (:func:`hf_harness_model`), so the
two paths give the same per-choice log-likelihoods. (Its rolling scores differ by one token:
HFLM puts its BOS prefix before the tokenizer's own BOS.)

Requests are batched longest first, as HFLM batches them, and right-padded: the model is
causal, so padding after a sequence changes none of its logits.

On several ranks (the training loop, FSDP) lm-eval itself splits the documents across ranks
and gathers the metrics on rank 0 (``rank``/``world_size``/``all_gather``/``gather_object``);
every forward pass is an FSDP collective, so before each one the ranks agree whether anyone
still has work, and a rank with none runs one-token dummy batches until all are done.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tinytitan.errors import TinytitanError

INSTALL_HINT = "lm-eval is not installed: pip install 'tinytitan[eval]' (or pip install 'lm-eval[hf]>=0.4,<0.5')"
SHIPPED_TASKS = Path(__file__).resolve().parent / "eval_tasks"
SAMPLE_TASK = "tinytitan_sample_order"  # the shipped offline task (util/make_eval_task.py)


def require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise TinytitanError(INSTALL_HINT) from None


def titan_lm(
    forward: Callable[[torch.Tensor], torch.Tensor],
    tokenizer,
    max_length: int,
    device: torch.device,
    batch_size: int = 16,
    distributed: bool = False,
    max_gen_toks: int = 128,
    progress: bool = False,
):
    """An lm-eval model over ``forward``; ``distributed`` splits the work across the process group's ranks."""
    require_lm_eval()
    from tinytitan.observe.titan_lm import TitanLM

    return TitanLM(forward, tokenizer, max_length, device, batch_size, distributed, max_gen_toks, progress)


def hf_harness_model(folder: str | os.PathLike, batch_size: int, device: str = "cpu", progress: bool = True):
    """lm-eval's own HFLM on an export, every context starting with BOS as in training; without ``progress``
    its request bars are off (lm-eval's evaluator calls them with ``disable_tqdm`` left at False)."""
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=True)

    cls = HFLM if progress else QuietHFLM
    return cls(pretrained=str(folder), batch_size=batch_size, device=device, dtype="float32", add_bos_token=True)


_MANAGERS: dict[str | None, Any] = {}


def task_manager(include_path: str | os.PathLike | None = None):
    """lm-eval's TaskManager with the shipped offline task and ``include_path`` (a folder of task YAMLs).

    Made once per process and folder: indexing lm-eval's thousands of task YAMLs takes seconds,
    which in-loop evaluation and ``--run`` would otherwise pay at every checkpoint.
    """
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise TinytitanError(f"--include-path {include_path} is not a folder of lm-eval task YAML files")
    key = None if include_path is None else str(Path(include_path).resolve())
    if key not in _MANAGERS:
        _MANAGERS[key] = TaskManager(include_path=[str(SHIPPED_TASKS), *([key] if key else [])])
    return _MANAGERS[key]


def broken_task_files(folder: str | os.PathLike) -> list[tuple[Path, str, str]]:
    """The task YAMLs under ``folder`` that do not parse: (file, "line N: the parser's words", its text).

    lm-eval skips such a file with a debug-level log, so a broken local task looked unknown.
    """
    import yaml

    class Loader(yaml.SafeLoader):  # lm-eval's tags (!function) are names here, not imports
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    broken = []
    for path in sorted(Path(folder).glob("**/*.yaml")):
        text = path.read_text(errors="replace")
        try:
            yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            broken.append((path, f"line {mark.line + 1}: {problem}" if mark is not None else problem, text))
    return broken


def _broken_task_error(path: Path, problem: str, tasks: Sequence[str]) -> TinytitanError:
    return TinytitanError(
        f"lm-eval task file {path} does not parse ({problem}), so lm-eval skips it and does not know "
        f"{', '.join(tasks)}: fix the YAML"
    )


def check_tasks(tasks: Sequence[str], include_path=None):
    """lm-eval is installed and knows every task; returns the task manager.

    A task YAML of ``include_path`` that does not parse is named with its line: at once when it
    names a requested task (before lm-eval indexes its thousands of tasks), else when a task is unknown.
    """
    require_lm_eval()
    broken = broken_task_files(include_path) if include_path is not None and Path(include_path).is_dir() else []
    for path, problem, text in broken:
        named = [t for t in tasks if re.search(rf"(?<![\w.-]){re.escape(t)}(?![\w.-])", text)]
        if named:
            raise _broken_task_error(path, problem, named)
    manager = task_manager(include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown and broken:
        raise _broken_task_error(broken[0][0], broken[0][1], unknown)
    if unknown:
        raise TinytitanError(
            f"unknown lm-eval task(s) {', '.join(unknown)}: use lm-eval's task names "
            f"(`lm-eval ls tasks`), {SAMPLE_TASK}, or pass --include-path DIR with their YAML files"
        )
    return manager


def run_tasks(lm, tasks: Sequence[str], *, include_path=None, limit: int | None = None,
              num_fewshot: int | None = None, log_samples: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """lm-eval's simple_evaluate on ``lm``: its results dict on rank 0 (None on the other ranks).

    Global RNGs are left as they were (lm-eval seeds them otherwise), so in-loop evaluation
    cannot change training; few-shot sampling keeps lm-eval's own fixed seed.
    """
    from lm_eval import simple_evaluate

    from tinytitan.compat import lm_eval_quiet_git

    manager = check_tasks(tasks, include_path)
    with lm_eval_quiet_git():
        return simple_evaluate(
            model=lm,
            tasks=list(tasks),
            task_manager=manager,
            limit=limit,
            num_fewshot=num_fewshot,
            log_samples=log_samples,
            random_seed=None,
            numpy_random_seed=None,
            torch_random_seed=None,
            bootstrap_iters=0,
        )


def metric_dict(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """task -> lm-eval's metric dict (``{"acc,none": ...}``): its ``metric,filter`` numbers (no alias, sample count)."""
    out = {}
    for task, metrics in results["results"].items():
        out[task] = {k: float(v) for k, v in metrics.items() if "," in k and isinstance(v, (int, float))}
    return out

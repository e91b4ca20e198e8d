"""torchtitan's metrics processor plus what a long run needs: ETA, data mix, stages, a JSONL log.

Every log step also appends one JSON line to ``<dump_folder>/metrics.jsonl``
(rank 0), with exact float values, so runs can be compared and plotted
without parsing console output. With ``[[data.stages]]`` the step line names the
stage, and ``data/stage`` (its index), ``data/stage/<name>/first_step`` and
``data/stage/<name>/tokens/<source>`` go to TensorBoard and the JSONL log.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import Any

import torch.distributed as dist
from torchtitan.components.metrics import MetricsProcessor
from torchtitan.tools.logging import logger

from tinytitan.rank import device
from tinytitan.run.folder import RunFolder

MFU_KEY = "mfu(%)"


def format_duration(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


def sum_over_ranks(stats: dict[str, float]) -> dict[str, float]:
    """Adds up per-rank counters; ranks may report different keys."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(stats)
    gathered: list[dict[str, float]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, stats)
    total: dict[str, float] = {}
    for part in gathered:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


class _KeepLast:
    """Wraps torchtitan's metric logger (TensorBoard or none), keeping the last dict it got.

    ``no_mfu``: MFU is left out (on CPU there is no peak FLOPS to measure against: n/a, not 0)."""

    def __init__(self, inner, no_mfu: bool = False):
        self.inner = inner
        self.no_mfu = no_mfu
        self.last: dict[str, Any] = {}

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.no_mfu:
            metrics = {k: v for k, v in metrics.items() if k != MFU_KEY}
        self.last = dict(metrics)
        self.inner.log(metrics, step)

    def close(self) -> None:
        self.inner.close()


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


class TinyMetricsProcessor(MetricsProcessor):
    """Each JSONL row holds every number torchtitan logged (loss, tps, mfu(%), memory/*,
    time_metrics/*, lr, ...) plus short aliases: loss, max_loss, grad_norm, tps. On CPU ``mfu(%)`` is
    null (n/a) and TensorBoard gets no MFU curve."""

    def __init__(self, job_config, parallel_dims, tag=None):
        super().__init__(job_config, parallel_dims, tag)
        self.logger = _KeepLast(self.logger, no_mfu=device.cpu_mode())
        if device.cpu_mode():
            self.gpu_peak_flops = float("inf")  # no known peak: the step line says "mfu: n/a" (rank.known_warnings)
        self._loader = None
        self.total_steps = job_config.training.steps
        self._first_log: tuple[int, float] | None = None
        self._is_writer = not dist.is_initialized() or dist.get_rank() == 0
        self._jsonl_path = str(RunFolder.of(job_config).metrics)

    def _append_jsonl(self, row: dict[str, Any]) -> None:
        if not self._is_writer:
            return
        os.makedirs(os.path.dirname(self._jsonl_path) or ".", exist_ok=True)
        with open(self._jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _progress(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        if self._first_log is None:
            self._first_log = (step, now)
        first_step, first_time = self._first_log
        elapsed = now - first_time
        done = step - first_step
        progress = {"time/elapsed_s": elapsed}
        if done > 0:
            progress["time/eta_s"] = elapsed / done * (self.total_steps - step)
        return progress

    def count_data_with(self, loader) -> None:
        """The data loader's per-rank counters (``stats()``), summed over ranks into data/* at each log step,
        and its stage metrics (``stage_stats()``, the same on every rank) when it has stages."""
        self._loader = loader

    def _data_stats(self) -> dict[str, float]:
        if self._loader is None:
            return {}
        out = {f"data/{k}": v for k, v in sum_over_ranks(self._loader.stats()).items()}
        if hasattr(self._loader, "stage_stats"):
            out.update({f"data/{k}": v for k, v in self._loader.stage_stats().items()})
        return out

    def _stage_label(self) -> str:
        stage = self._loader.current_stage() if hasattr(self._loader, "current_stage") else None
        if stage is None:
            return ""
        n = len(self._loader.stages)
        return f"  stage {stage.name} ({self._loader.stages.index(stage) + 1}/{n})"

    def log(self, step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=None):
        extra = dict(extra_metrics or {})
        extra.update(self._data_stats())
        progress = self._progress(step)
        extra.update(progress)
        # The same tokens/s per device that torchtitan prints, kept for the JSONL row.
        window = time.perf_counter() - self.time_last_log
        tps = self.ntokens_since_last_log / (window * self.parallel_dims.non_data_parallel_size)
        super().log(step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=extra)
        eta = progress.get("time/eta_s")
        logger.info(
            f"step {step}/{self.total_steps}{self._stage_label()}  elapsed {format_duration(progress['time/elapsed_s'])}"
            f"  eta {'n/a' if eta is None else format_duration(eta)}"
        )
        self._append_jsonl(
            {
                "step": step,
                "loss": global_avg_loss,
                "max_loss": global_max_loss,
                "grad_norm": grad_norm,
                "tps": tps,
                **_numbers(self.logger.last),
                **({MFU_KEY: None} if self.logger.no_mfu else {}),
            }
        )

    def log_eval(self, metrics: dict[str, float], step: int) -> None:
        """In-loop benchmark scores (``eval/<task>/<metric>``) to TensorBoard and the JSONL log."""
        self.logger.log(metrics, step)
        self._append_jsonl({"step": step, **metrics})

    def log_extra(self, metrics: dict[str, float], step: int) -> None:
        """Numbers of a step outside torchtitan's log (the guard's ``guard/*``, ``health/*``): TensorBoard and JSONL."""
        if metrics:
            self.log_eval(metrics, step)

    def log_validation(self, loss, step, extra_metrics=None):
        super().log_validation(loss, step, extra_metrics=extra_metrics)
        self._append_jsonl({"step": step, "validation/loss": loss, **_numbers(self.logger.last)})

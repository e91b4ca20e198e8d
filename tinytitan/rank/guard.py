"""``[guard]``: no step that would harm the weights reaches them, and a divergence is rolled back.

Each step, between torchtitan's gradient clipping and its optimizer step, the ranks judge the
step on two numbers that are the same on every rank: the global loss (this rank's loss summed
over the data-parallel ranks, as torchtitan's logged loss) and the gradient norm torchtitan's
``clip_grad_norm_`` computed (already reduced over every rank). So every rank skips, or applies,
the same steps, with no extra agreement.

- non-finite loss or gradient norm: skipped (gradients zeroed, no optimizer update);
- a spike, loss or gradient norm more than ``z_threshold`` standard deviations above the mean of
  the last ``window`` applied steps (once ``warmup`` of them are in it): skipped the same way;
- ``max_skipped`` skipped steps in a row: a divergence (``Verdict.diverged``); the trainer rolls
  back (``tinytitan.rank.trainer``).

A skipped step's data is consumed (the stream goes on, as after an applied step), its LR
schedule step taken: resume stays exact, since a resume replays the same decisions from the
window saved in each checkpoint's health mark.

Cost: one all-reduce of one number (the loss) and one device-to-host copy of two numbers per
step, just before the optimizer step (``benchmarks/guard_cost.py``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torchtitan.tools.logging import logger

from tinytitan.compat import on_grad_norm
from tinytitan.run.folder import RunFolder
from tinytitan.run.steps import SKIPPED, StepEvent, append_event

STD_FLOOR = 0.01  # a window's spread counts as at least 1% of its mean: a flat window does not make noise a spike


@dataclass(frozen=True)
class Verdict:
    skip: bool
    reason: str = ""
    diverged: bool = False


def _z(value: float, history: deque) -> float:
    n = len(history)
    mean = sum(history) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in history) / n)
    return (value - mean) / max(std, STD_FLOOR * abs(mean), 1e-12)


class Judge:
    """The decision, pure Python: the same inputs give the same verdicts on every rank and after a resume."""

    def __init__(self, window: int, warmup: int, z_threshold: float, max_skipped: int):
        self.warmup, self.z_threshold, self.max_skipped = warmup, z_threshold, max_skipped
        self.losses: deque = deque(maxlen=window)
        self.norms: deque = deque(maxlen=window)
        self.in_a_row = 0  # skipped steps in a row, up to the last one judged
        self.skipped_since_save = 0

    def judge(self, loss: float | None, grad_norm: float) -> Verdict:
        """``loss`` None: not known here (pipeline parallelism), judged on the gradient norm alone."""
        reason = ""
        if not math.isfinite(grad_norm):
            reason = f"the gradient norm is {grad_norm}"
        elif loss is not None and not math.isfinite(loss):
            reason = f"the loss is {loss}"
        elif self.z_threshold > 0 and len(self.norms) >= self.warmup:
            z_norm = _z(grad_norm, self.norms)
            z_loss = _z(loss, self.losses) if loss is not None and self.losses else 0.0
            if z_loss > self.z_threshold:
                reason = f"a loss spike: {z_loss:.1f} standard deviations above the last {len(self.losses)} steps"
            elif z_norm > self.z_threshold:
                reason = (f"a gradient norm spike: {z_norm:.1f} standard deviations above the last "
                          f"{len(self.norms)} steps")  # fmt: skip
        if reason:
            self.in_a_row += 1
            self.skipped_since_save += 1
            return Verdict(True, reason, diverged=self.in_a_row >= self.max_skipped)
        self.in_a_row = 0
        self.norms.append(grad_norm)
        if loss is not None:
            self.losses.append(loss)
        return Verdict(False)

    def state(self) -> dict:
        return {"losses": list(self.losses), "norms": list(self.norms), "in_a_row": self.in_a_row}

    def load(self, state: dict | None) -> None:
        self.losses.clear()
        self.norms.clear()
        if state:
            self.losses.extend(state.get("losses", []))
            self.norms.extend(state.get("norms", []))
            self.in_a_row = int(state.get("in_a_row", 0))
        else:
            self.in_a_row = 0
        self.skipped_since_save = 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


class StepGuard:
    """The guard of one rank's trainer: collects the step's loss and gradient norm, judges, skips."""

    def __init__(self, job_config, parallel_dims, device):
        cfg = job_config.guard
        self.judge = Judge(cfg.window, cfg.warmup, cfg.z_threshold, cfg.max_skipped)
        self.folder = RunFolder.of(job_config)
        self.device = device
        self.is_writer = dist.get_rank() == 0
        self.loss_group = None
        if parallel_dims.dp_cp_enabled:
            self.loss_group = parallel_dims.get_optional_mesh("loss").get_group()
        self.judge_loss = not parallel_dims.pp_enabled  # under PP only the last stage holds the loss
        self.losses: list[torch.Tensor] = []
        self.grad_norm: torch.Tensor | None = None
        self.last_loss: float | None = None
        self.last: Verdict = Verdict(False)
        self.log_extra = None  # metrics: (dict, step) -> TensorBoard and metrics.jsonl, set by the trainer
        self.skipped_total = 0
        on_grad_norm(self._keep_grad_norm)

    def _keep_grad_norm(self, total_norm: torch.Tensor) -> None:
        self.grad_norm = total_norm

    def begin_step(self) -> None:
        self.losses, self.grad_norm = [], None

    def add_loss(self, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach())

    def decide(self, step: int) -> Verdict:
        """Called by every rank where torchtitan steps the optimizer: the same verdict everywhere."""
        if self.grad_norm is None:  # torchtitan did not clip (nothing to judge): apply
            self.last = Verdict(False)
            return self.last
        loss = torch.stack(self.losses).sum().float() if self.losses else torch.zeros((), device=self.device)
        if self.loss_group is not None and self.judge_loss:
            dist.all_reduce(loss, group=self.loss_group)
        values = torch.stack([loss.reshape(()).to(self.grad_norm.device), self.grad_norm.float().reshape(())])
        loss_value, norm_value = values.tolist()  # the one host sync the guard adds
        self.last_loss = loss_value if self.judge_loss else None
        self.last = self.judge.judge(self.last_loss, norm_value)
        if self.last.skip:
            self.skipped_total += 1
            if self.is_writer:
                logger.warning(f"tinytitan: step {step} skipped: {self.last.reason} (loss {_fmt(loss_value)}, "
                               f"gradient norm {_fmt(norm_value)}); the weights were not updated")  # fmt: skip
                append_event(self.folder, StepEvent(step, SKIPPED, self.last.reason, loss_value, norm_value))
            if self.log_extra is not None:
                self.log_extra({"guard/skipped_steps": self.skipped_total, "guard/skipped": 1}, step)
        return self.last

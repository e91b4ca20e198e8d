"""The checkpoint side of ``[guard]``: health marks, no non-finite save, and the rollback, in-process.

- Before a checkpoint save the ranks agree that every weight is finite; if one is not, nothing is
  saved (a ``save_refused`` event). After it, rank 0 writes the folder's health mark
  (``tinytitan.run.steps``): healthy or suspect, the loss, the guard's window.
- ``load`` (torchtitan's, at the start and here) restores the guard's window from the mark of the
  step it loaded, so a resumed run makes the same decisions as an uninterrupted one.
- A divergence (``[guard] max_skipped`` skipped steps in a row) at step D: the ranks wait for any
  save in flight, rank 0 picks the newest complete, healthy checkpoint C <= D and deletes the
  newer ones (suspect by construction), every rank loads C with torchtitan's ``CheckpointManager.load``
  (model, optimizer, LR schedule, data position, step), then reads and drops the data of
  ``rollback_skip_steps`` steps (-1: D - C): the global windows [W_C, W_C + n x windows per step),
  where W_C is the data position C saved. Training goes on from step C + 1.
- After ``max_rollbacks`` rollbacks with no healthy checkpoint saved past the divergence, or with no
  healthy checkpoint at all, every rank raises the same ``TinytitanError``: the launcher prints it
  as one line and exits non-zero.
"""

from __future__ import annotations

import shutil

import torch
import torch.distributed as dist
from torchtitan.tools.logging import logger

from tinytitan.checkpoint.completeness import folder_problem, saved_step_folders
from tinytitan.compat import checkpoint_due, wait_for_async_save
from tinytitan.errors import TinytitanError
from tinytitan.rank.guard import Verdict
from tinytitan.run.steps import (
    ROLLED_BACK,
    SAVE_REFUSED,
    STOPPED,
    StepEvent,
    append_event,
    is_healthy,
    read_health,
    write_health,
)


class Rollback:
    def __init__(self, trainer):
        self.trainer = trainer
        self.rollbacks = 0  # since the last recovery
        self.diverged_at: int | None = None

    @property
    def guard(self):
        return self.trainer.guard

    # ---------------------------------------------------------------- saves and loads
    def _weights_finite(self) -> bool:
        """Every rank's shards finite: agreed over the gloo group (a save step only, so a sync is fine)."""
        finite = all(
            bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all())
            for m in self.trainer.model_parts
            for p in m.parameters()
        )
        return not self.trainer.agreement.any(not finite)

    def guarded_save(self, save):
        def run(curr_step: int, last_step: bool = False):
            ckpt = self.trainer.checkpointer
            due = self.guard is not None and ckpt.enable and checkpoint_due(ckpt, curr_step, last_step=last_step)
            if due and not self._weights_finite():
                logger.warning(f"tinytitan: step {curr_step}: the weights are not finite: no checkpoint saved")
                if dist.get_rank() == 0:
                    append_event(self.guard.folder, StepEvent(curr_step, SAVE_REFUSED, "the weights are not finite"))
                return None
            result = save(curr_step, last_step=last_step)
            if due:
                self.mark(curr_step)
            return result

        return run

    def mark(self, step: int, finite: bool = True) -> None:
        """The health mark of the checkpoint of ``step`` (rank 0 writes; every rank resets its count)."""
        guard = self.guard
        if guard is None:
            return
        judge = guard.judge
        healthy = finite and not guard.last.skip and judge.in_a_row == 0
        if dist.get_rank() == 0:
            write_health(guard.folder.step(step), {
                "step": step, "healthy": healthy, "finite": finite, "loss": guard.last_loss,
                "skipped_since_previous": judge.skipped_since_save, "skipped_total": guard.skipped_total,
                "rollbacks": self.rollbacks, "guard": judge.state(),
            })  # fmt: skip
        judge.skipped_since_save = 0
        if healthy and self.diverged_at is not None and step > self.diverged_at:
            self.rollbacks, self.diverged_at = 0, None  # recovered

    def guarded_load(self, load):
        def run(step: int = -1):
            loaded = load(step=step)
            if loaded and self.guard is not None:
                self._restore(self.trainer.step)
            return loaded

        return run

    def _restore(self, step: int) -> None:
        mark = read_health(self.guard.folder.step(step)) or {}
        self.guard.judge.load(mark.get("guard"))
        self.guard.skipped_total = int(mark.get("skipped_total", 0))
        self.guard.last = Verdict(False)
        self.rollbacks = int(mark.get("rollbacks", self.rollbacks))

    # ---------------------------------------------------------------- rollback
    def _healthy_before(self, step: int):
        """(step, folder) of the newest complete, healthy checkpoint at or before ``step``, or None."""
        for s, path in reversed(saved_step_folders(self.trainer.checkpointer.folder)):
            if s <= step and folder_problem(path) is None and is_healthy(path):
                return s, path
        return None

    def roll_back(self) -> None:
        trainer, guard = self.trainer, self.guard
        ckpt, cfg, diverged = trainer.checkpointer, trainer.job_config.guard, trainer.step
        in_a_row = guard.judge.in_a_row
        if ckpt.enable:
            wait_for_async_save(ckpt)
        target = [self._healthy_before(diverged) if dist.get_rank() == 0 and ckpt.enable else None]
        dist.broadcast_object_list(target, src=0, group=trainer.agreement.group)
        found = target[0]
        if found is None or self.rollbacks >= cfg.max_rollbacks:
            self._stop(diverged, in_a_row, found)
        good_step, good_path = found
        self.rollbacks += 1
        self.diverged_at = max(diverged, self.diverged_at or 0)
        if dist.get_rank() == 0:
            for s, path in saved_step_folders(ckpt.folder):
                if s > good_step:  # saved on the way to the divergence: suspect
                    shutil.rmtree(path, ignore_errors=True)
        dist.barrier(group=trainer.agreement.group)
        rollbacks, skipped_total = self.rollbacks, guard.skipped_total  # counts of the whole run: kept
        ckpt.load(step=good_step)  # every state: model, optimizer, LR, data position, step; and the guard's window
        self.rollbacks, guard.skipped_total = rollbacks, skipped_total
        n = diverged - good_step if cfg.rollback_skip_steps == -1 else cfg.rollback_skip_steps
        loader = trainer.dataloader
        first = loader.windows() if hasattr(loader, "windows") else None
        batches = iter(loader)
        for _ in range(n * trainer.gradient_accumulation_steps):
            next(batches)
        end = loader.windows() if hasattr(loader, "windows") else None
        windows = f" (global windows {first} to {end - 1})" if first is not None and end > first else ""
        event = StepEvent(diverged, ROLLED_BACK, f"{in_a_row} steps skipped in a row", checkpoint_step=good_step,
                          skipped_steps=n, first_window=first, end_window=end, rollbacks=self.rollbacks)  # fmt: skip
        if dist.get_rank() == 0:
            logger.warning(
                f"tinytitan: diverged at step {diverged} ({in_a_row} steps skipped in a row): rolled back to "
                f"{good_path}, skipping the data of {n} steps{windows}; rollback {self.rollbacks} of "
                f"{cfg.max_rollbacks}; training goes on from step {good_step + 1}"
            )
            append_event(guard.folder, event)
        if guard.log_extra is not None:
            guard.log_extra({"guard/rollbacks": self.rollbacks}, diverged)

    def _stop(self, diverged: int, in_a_row: int, found) -> None:
        tried = f"{self.rollbacks} rollback{'s' if self.rollbacks != 1 else ''} tried"
        if found is None:
            good = "no healthy checkpoint exists to resume or fine-tune from"
        else:
            good = (f"the last good checkpoint is {found[1]} (resume or fine-tune from it: --checkpoint.load_step "
                    f"{found[0]}, e.g. with a lower --optimizer.lr)")  # fmt: skip
        if dist.get_rank() == 0:
            append_event(self.guard.folder, StepEvent(diverged, STOPPED, f"{in_a_row} steps skipped in a row",
                                                      checkpoint_step=found[0] if found else None,
                                                      rollbacks=self.rollbacks))  # fmt: skip
        raise TinytitanError(f"training diverged at step {diverged} ({in_a_row} steps skipped in a row, {tried}): "
                             f"stopped; {good}")  # fmt: skip

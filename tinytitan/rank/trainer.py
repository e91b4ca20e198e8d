"""torchtitan's Trainer with tinytitan's hooks: start-up (CPU settings, metrics wiring), the labels for a
chunked loss ([loss]), in-loop [eval], faults.

Progress: each rank records in memory where it is in the step (tinytitan.rank.heartbeat), through
the Trainer methods torchtitan's loop calls: ``train_step`` (a step begins), ``batch_generator``
(data), ``forward_backward_step`` (forward/backward, then optimizer), the checkpointer's ``save``
and the validator's ``validate``, and ``should_continue_training`` (step end).

Faults are handled at the one place torchtitan calls between steps,
``should_continue_training``, after the step's interval checkpoint:
- old checkpoints are purged counting complete folders only (torchtitan's own purge
  counts partial ones too, and could delete the last complete checkpoint);
- the ranks agree whether one was asked to stop; if so, all save this step and stop;
- ``[guard]`` (tinytitan.rank.guard): a divergence rolls back to the newest healthy checkpoint.

The guard itself sits at the optimizer step (``self.optimizers.step`` is wrapped: a skipped step
zeroes the gradients instead), and at the checkpointer's ``save`` (no non-finite weights are
saved; a health mark follows each save) and ``load`` (the guard's window comes back with a checkpoint).

``[ema]`` (tinytitan.rank.ema): the average of the weights is updated at the end of ``train_step`` (after the
optimizer step) and is the CheckpointManager state ``ema``, saved and loaded with the others; a checkpoint
saved without one (EMA turned on mid-run, a seed checkpoint, ``initial_load_path``) starts it at the loaded
weights.
"""

from __future__ import annotations

import os

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torchtitan.components.checkpoint import AsyncMode
from torchtitan.tools.logging import logger
from torchtitan.train import Trainer

from tinytitan.checkpoint.completeness import disk_full_error, folder_problem, purge_checkpoints, saved_step_folders
from tinytitan.checkpoint.reader import open_checkpoint
from tinytitan.compat import (
    checkpoint_due,
    checkpoint_folder,
    full_training_state,
    wait_for_async_save,
    wrap_method,
)
from tinytitan.config import resolve_job_paths
from tinytitan.data.stages import stage_lr_schedule
from tinytitan.errors import TinytitanError
from tinytitan.job_config import validate_job_config
from tinytitan.rank import device
from tinytitan.rank.guard import StepGuard, Verdict
from tinytitan.rank.heartbeat import writer_for
from tinytitan.rank.layer_stats import LayerStats
from tinytitan.rank.loss import model_inputs
from tinytitan.rank.preemption import StepAgreement, StopRequest
from tinytitan.rank.rollback import Rollback
from tinytitan.run import faults


def clamp_warmup(job_config) -> None:
    """A warmup longer than the LR schedule warms up over the whole schedule, as torchtitan does, but said once
    and set in the config, so torchtitan's start line shows the warmup it runs (not the one asked for)."""
    sched = job_config.lr_scheduler
    total = sched.total_steps if sched.total_steps is not None else job_config.training.steps
    if sched.warmup_steps > total:
        logger.info(f"lr: [lr_scheduler] warmup_steps {sched.warmup_steps} exceeds the schedule's {total} steps: "
                    f"warming up over all {total}")  # fmt: skip
        sched.warmup_steps = total


class TinyTrainer(Trainer):
    stop_request: StopRequest = StopRequest()  # tinytitan.rank.main installs the signal handlers on it

    def __init__(self, job_config):
        from tinytitan.rank.in_loop_eval import build_in_loop_eval

        device.adapt_job_config(job_config)
        resolve_job_paths(job_config)
        # Before torchtitan's first collective (see HeartbeatWriter): RANK is torchrun's, dist is not up yet.
        self.heartbeat = writer_for(job_config, int(os.environ.get("RANK", "0")))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        validate_job_config(job_config, world_size)  # the launcher's checks, again: `torchrun` alone skips them
        clamp_warmup(job_config)
        # torchtitan's LR hook sees [lr_scheduler] and training.steps only: the stages become its decay_ratio
        lr_line = stage_lr_schedule(job_config, world_size)
        super().__init__(job_config)
        if lr_line:
            logger.info(lr_line)
        self.guard = StepGuard(job_config, self.parallel_dims, self.device) if job_config.guard.enable else None
        self.layer_stats = LayerStats(self.model_parts, job_config.guard.stats_freq)
        wrap_method(self.optimizers, "step", self._guarded_step)
        self.rollback = Rollback(self)
        wrap_method(
            self.checkpointer, "save", lambda save: self._in_phase("checkpoint", self.rollback.guarded_save(save))
        )
        wrap_method(self.checkpointer, "load", self.rollback.guarded_load)
        wrap_method(self.checkpointer, "load", self._tokens_on_another_layout)
        if getattr(self, "validator", None) is not None:  # set only when [validation] is enabled
            wrap_method(self.validator, "validate", lambda validate: self._in_phase("validation", validate))
        if hasattr(self.dataloader, "stats"):
            self.metrics_processor.count_data_with(self.dataloader)
        # purged here, see purge_checkpoints (a disabled CheckpointManager has no keep_latest_k)
        self.keep_latest_k = getattr(self.checkpointer, "keep_latest_k", 0)
        if self.checkpointer.enable:
            self.checkpointer.keep_latest_k = 0
        self.agreement = StepAgreement(job_config.comm.init_timeout_seconds)
        self.preempted_at: int | None = None
        self.finished_saves: set = set()
        self.in_loop_eval = build_in_loop_eval(self)  # [eval]: lm-eval tasks every freq steps, or None
        self.ema = self._build_ema(job_config)

        if self.guard is not None:
            self.guard.log_extra = self.metrics_processor.log_extra

    def _build_ema(self, job_config):
        """[ema]: the average of the weights, registered with the checkpointer (its ``states`` dict is what
        torchtitan saves and loads), or None when off."""
        if not job_config.ema.enable:
            return None
        from tinytitan.rank.ema import STATE_KEY, WeightAverage

        ckpt = self.checkpointer
        ema = WeightAverage(self.model_parts, job_config.ema, ckpt.states["model"].state_dict().keys())
        ckpt.states[STATE_KEY] = ema
        wrap_method(ckpt, "load", self._load_with_ema)
        logger.info(f"[ema] averaging the weights, decay {job_config.ema.decay:g}"
                    + (" (warmup (1 + step) / (10 + step))" if job_config.ema.warmup else ""))  # fmt: skip
        return ema

    def _load_with_ema(self, load):
        """torchtitan's load, skipping the ``ema`` state when the checkpoint it reads has none; then an average
        that was not loaded restarts at the loaded weights."""
        from tinytitan.rank.ema import STATE_KEY

        def run(step: int = -1):
            ckpt = self.checkpointer
            folder = self._folder_to_load(step)
            skip = folder is not None and not open_checkpoint(folder, check=False, hold=False).has_ema
            excluded = list(ckpt.exclude_from_loading)
            if skip:
                ckpt.exclude_from_loading = [*excluded, STATE_KEY]
            try:
                loaded = load(step)
            finally:
                ckpt.exclude_from_loading = excluded
            if not self.ema.loaded:
                self.ema.copy_from_model()
                if loaded:
                    logger.warning("[ema] the checkpoint loaded holds no average: it starts at the loaded weights")
            return loaded

        return run

    def _tokens_on_another_layout(self, load):
        """torchtitan's train_state keeps one rank's ``ntokens_seen`` (every dp rank counts the same tokens, and
        ``n_tokens_seen`` is their sum); a checkpoint of 2 dp ranks resumed on 1 would count half the run's tokens.
        When the loader loaded a state of another dp layout, the count becomes this layout's share of the same
        total."""

        def run(*args, **kwargs):
            loaded = load(*args, **kwargs)
            old = getattr(self.dataloader, "loaded_layout", None)
            now = getattr(self.dataloader, "dp_world_size", None)
            if loaded and old is not None and now and old.dp_world_size != now:
                self.ntokens_seen = self.ntokens_seen * old.dp_world_size // now
            return loaded

        return run

    def _folder_to_load(self, step: int):
        """The full checkpoint torchtitan's ``load(step)`` will read with every state, or None (nothing, or
        the model only)."""
        ckpt, config = self.checkpointer, self.job_config.checkpoint
        if not ckpt.enable:
            return None
        if not os.path.exists(ckpt.folder):
            if config.initial_load_path and not config.initial_load_model_only and not config.initial_load_in_hf:
                return config.initial_load_path
            return None
        if step == -1:
            saved = saved_step_folders(ckpt.folder)
            step = saved[-1][0] if saved else -1
        if step <= 0:  # nothing, or step 0 (torchtitan loads a seed checkpoint's model only)
            return None
        return checkpoint_folder(ckpt, step)

    def post_dataloading_process(self, input_dict, labels):
        """torchtitan's, plus the labels among the model's inputs when the model computes the loss ([loss])."""
        inputs, labels, extra_inputs, extra_kwargs = super().post_dataloading_process(input_dict, labels)
        return inputs, labels, {**extra_inputs, **model_inputs(self.loss_fn, labels)}, extra_kwargs

    def _in_phase(self, phase: str, method):
        def run(*args, **kwargs):
            self.heartbeat.enter(phase)
            return method(*args, **kwargs)

        return run

    def train_step(self, data_iterator):
        self.heartbeat.begin_step(self.step)
        if self.guard is not None:
            self.guard.begin_step()
        self.stepped = False  # set by the optimizer step when the guard lets it through
        super().train_step(data_iterator)
        if self.ema is not None and self.stepped:
            self.ema.update(self.step)  # after the optimizer step (a skipped step leaves the average); before the save
        if self.in_loop_eval is not None and self.in_loop_eval.due(self.step):
            self.heartbeat.enter("eval")
            self.in_loop_eval.run(self.model_parts, self.step)

    def batch_generator(self, data_iterable):
        batches = super().batch_generator(data_iterable)
        while True:
            self.heartbeat.enter("data")
            batch = next(batches)  # torchtitan's generator ends by raising DataloaderExhaustedError
            self.heartbeat.enter("forward/backward")  # next: the step's token count all-reduce, then the model
            yield batch

    def forward_backward_step(self, **kwargs):
        self.heartbeat.enter("forward/backward")
        loss = super().forward_backward_step(**kwargs)
        if self.guard is not None:
            self.guard.add_loss(loss)
        self.heartbeat.enter("optimizer")  # after the last micro-batch: clipping, the optimizer step, the loss
        return loss

    def _guarded_step(self, step_optimizers):
        """torchtitan's optimizer step, unless the guard skips this step (then the gradients are zeroed);
        with the per-layer statistics around it on ``[guard] stats_freq`` steps."""

        def run(*args, **kwargs):
            verdict = self.guard.decide(self.step) if self.guard is not None else Verdict(False)
            if verdict.skip:
                self.optimizers.zero_grad()
                return None
            stats = self.layer_stats.due(self.step)
            if stats:
                self.layer_stats.before_update()
            result = step_optimizers(*args, **kwargs)
            self.stepped = True
            if stats:
                norm = self.guard.judge.norms[-1] if self.guard is not None and self.guard.judge.norms else 0.0
                row = self.layer_stats.after_update(norm, self.job_config.training.max_norm)
                self.metrics_processor.log_extra(row, self.step)
            return result

        return run

    def close(self) -> None:
        """Closes what this trainer owns, in order, before torchtitan's parts and the process group go.

        The data loader's worker processes and queues are stopped here rather than left to
        ``atexit`` and ``__del__`` during interpreter shutdown.
        """
        loader = getattr(self, "dataloader", None)
        if loader is not None and hasattr(loader, "close"):
            loader.close()
        super().close()
        if hasattr(self, "heartbeat"):
            self.heartbeat.close()

    def train(self):
        self._skip_incomplete_checkpoints()
        try:
            super().train()
        except (Exception, CheckpointException) as e:  # DCP's CheckpointException is a BaseException
            error = disk_full_error(e, self.checkpointer.folder)
            if error is not None:
                raise error from e
            raise
        self.heartbeat.enter("finished")

    def _skip_incomplete_checkpoints(self) -> None:
        """torchtitan resumes from the newest folder with a .metadata; pass over truncated ones."""
        ckpt = self.checkpointer
        if not ckpt.enable or self.job_config.checkpoint.load_step != -1:
            return
        with_metadata = saved_step_folders(ckpt.folder)
        for step, path in reversed(with_metadata):
            problem = folder_problem(path)
            if problem is None:
                if step != with_metadata[-1][0]:
                    self.job_config.checkpoint.load_step = step
                return
            logger.warning(f"Skipping checkpoint {path}: {problem}.")
        if with_metadata:
            raise TinytitanError(
                f"every checkpoint in {ckpt.folder} is incomplete (`tinytitan checkpoint inspect {ckpt.folder} --all`): "
                "move them away to start afresh, or restore a complete one"
            )

    def should_continue_training(self) -> bool:
        self.heartbeat.enter("step end")
        rank = dist.get_rank()
        if self.step == 1:
            self.agreement.set_timeout(self.job_config.comm.train_timeout_seconds)
        if self.guard is not None and self.guard.last.diverged:
            self.heartbeat.enter("checkpoint")  # loading one: an unwatched phase (tinytitan.run.faults)
            self.rollback.roll_back()  # or raises a TinytitanError: the run stops
        if rank == 0 and self.keep_latest_k > 0 and self.checkpointer.enable:
            finished = {p for _, p in saved_step_folders(self.checkpointer.folder)}
            if finished != self.finished_saves:  # a save completed: purge (reading .metadata files is not free)
                self.finished_saves = finished
                purge_checkpoints(self.checkpointer.folder, self.keep_latest_k, keep_healthy=self.guard is not None)
        if self.preempted_at is None and self.agreement.any(self.stop_request.requested):
            self._save_for_preemption()
            return False
        return self.preempted_at is None and super().should_continue_training()

    def _save_for_preemption(self) -> None:
        """A full checkpoint of the step just finished, unless the interval save already wrote it."""
        ckpt, step = self.checkpointer, self.step
        self.preempted_at = step
        folder = checkpoint_folder(ckpt, step)
        if step == 0 or not ckpt.enable:
            logger.warning(f"Asked to stop at step {step}: nothing to save, stopping.")
            return
        saved = checkpoint_due(ckpt, step, last_step=step == self.job_config.training.steps)
        self.heartbeat.enter("checkpoint")
        logger.info(f"Asked to stop ({self.stop_request.signal_name or 'another rank'}): saving step {step}.")
        wait_for_async_save(ckpt)  # an interval save of this step may still be in flight
        if not saved:
            states = full_training_state(ckpt)
            try:
                ckpt.dcp_save(
                    states, checkpoint_id=folder, async_mode=AsyncMode.DISABLED, enable_garbage_collection=True
                )
            except (Exception, CheckpointException) as e:
                error = disk_full_error(e, ckpt.folder)
                raise (error or e) from e
        dist.barrier(group=self.agreement.group)  # every rank's files are written
        logger.info(f"Preemption checkpoint {folder} is complete; exiting so that the job can be requeued.")
        if not saved:
            self.rollback.mark(step)
        faults.note_preempted(dist.get_rank(), step, folder)

"""A recipe's stages over the run: which optimizer steps each stage covers, and what it does to the LR.

``[[data.stages]]`` says when a stage ends in global tokens; a run advances in optimizer steps of
``global batch x seq_len`` tokens, so a stage ends at the first step boundary at or after its
``until_tokens`` (``ceil``), and the next stage starts at the step after it. Everything here is a
pure function of the config and the run's data-parallel size: the launcher prints the spans before
any process starts, each rank's loader turns them into window indices, and the trainer derives
torchtitan's ``decay_ratio`` from the decay stage.

Without stages the run is one span named "" with the sources' weights, so one code path serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinytitan.data.config import Data
from tinytitan.errors import TinytitanError


@dataclass(frozen=True)
class StageSpan:
    """One stage over the run: its steps (1-based, inclusive) and normalized weights of every source."""

    index: int
    name: str  # "" for the single mixture of a run without stages
    first_step: int
    last_step: int  # the run's last step for the last stage
    weights: dict[str, float]
    lr: str  # "", "stable" or "decay"
    until_tokens: int | None = None

    def steps(self) -> int:
        return self.last_step - self.first_step + 1


def data_parallel_ranks(parallelism, world_size: int) -> int:
    """The data-parallel degree of a run of ``world_size`` ranks (the rest is tensor/pipeline/context)."""
    model_ranks = max(1, parallelism.tensor_parallel_degree) * max(1, parallelism.pipeline_parallel_degree)
    model_ranks *= max(1, parallelism.context_parallel_degree)
    return max(1, world_size // model_ranks)


def sequences_per_step(training, dp_ranks: int) -> int:
    """Sequences (``seq_len + 1`` windows) one optimizer step consumes over all ranks: the global batch."""
    return training.global_batch_size if training.global_batch_size > 0 else training.local_batch_size * dp_ranks


def stage_spans(data: Data, steps: int, tokens_per_step: int) -> list[StageSpan]:
    """The stages of a run of ``steps`` optimizer steps of ``tokens_per_step`` tokens; refuses ends outside it."""
    weights = data.stage_weights()
    if not data.stages:
        return [StageSpan(0, "", 1, steps, weights[0], "")]
    spans: list[StageSpan] = []
    first = 1
    for i, (stage, ws) in enumerate(zip(data.stages, weights, strict=True)):
        last_stage = i == len(data.stages) - 1
        if stage.until_tokens is None:
            end = steps
        else:
            end = math.ceil(stage.until_tokens / tokens_per_step)
            at = f"data stage {stage.name!r}: until_tokens = {stage.until_tokens:,} ends at step {end}"
            per_step = f"({tokens_per_step:,} tokens per step)"
            if end < first:
                raise TinytitanError(
                    f"{at} {per_step}, but the stage before it ends at step {first - 1}: the stage would have no "
                    "step; move its end later or merge the two stages"
                )
            if not last_stage and end >= steps:
                raise TinytitanError(
                    f"{at} {per_step}, but the run has training.steps = {steps}, so the stages after it never "
                    f"run: end it before step {steps} (until_tokens <= {(steps - 1) * tokens_per_step:,}) "
                    "or train longer"
                )
            if last_stage and end != steps:
                raise TinytitanError(
                    f"{at} {per_step}, but the run has training.steps = {steps}: the last stage runs to the end of "
                    f"the run; remove its until_tokens, or set training.steps = {end}"
                )
        spans.append(StageSpan(i, stage.name, first, end, ws, stage.lr, stage.until_tokens))
        first = end + 1
    return spans


def run_spans(job_config, world_size: int) -> list[StageSpan]:
    """``stage_spans`` of a job config for a run of ``world_size`` ranks."""
    training = job_config.training
    dp = data_parallel_ranks(job_config.parallelism, world_size)
    return stage_spans(job_config.data, training.steps, sequences_per_step(training, dp) * training.seq_len)


# ---------------------------------------------------------------- learning rate


def stages_set_lr(data: Data) -> bool:
    return any(stage.lr for stage in data.stages)


def decay_steps(spans: list[StageSpan]) -> int | None:
    """Steps torchtitan's warmup-stable-decay schedule decays over: the decay stage's steps; None: no decay.

    torchtitan's decay phase starts at the peak LR at its first step and reaches ``min_lr_factor``
    one (virtual) step after the run's last, as its own default schedule does after warmup.
    """
    decay = [s for s in spans if s.lr == "decay"]
    return decay[0].steps() if decay else None


def lr_decay_ratio(spans: list[StageSpan], steps: int) -> float:
    """The ``[lr_scheduler] decay_ratio`` that makes torchtitan's schedule follow the stages.

    torchtitan decays over ``round(steps * decay_ratio)`` steps at the end of the run; with no decay
    stage the ratio is 0 and the LR holds after warmup ("stable" to the end).
    """
    n = decay_steps(spans) or 0
    ratio = n / steps
    if round(steps * ratio) != n:  # float rounding must not move the decay by a step
        raise AssertionError(f"decay ratio {ratio!r} gives {round(steps * ratio)} steps, not {n}")
    return ratio


def stage_lr_schedule(job_config, world_size: int) -> str | None:
    """Sets ``[lr_scheduler] decay_ratio`` from the stages when they set the LR, so that torchtitan's own
    warmup-stable-decay schedule (``build_lr_schedulers``) follows them; returns the line to log."""
    if not stages_set_lr(job_config.data):
        return None
    spans = run_spans(job_config, world_size)
    steps = job_config.training.steps
    job_config.lr_scheduler.decay_ratio = lr_decay_ratio(spans, steps)
    warmup = job_config.lr_scheduler.warmup_steps
    decay = [s for s in spans if s.lr == "decay"]
    if not decay:
        return f"lr: warmup over steps 1-{warmup}, then stable to step {steps} (the stages set no decay)"
    return (
        f"lr: warmup over steps 1-{warmup}, stable to step {decay[0].first_step - 1}, then "
        f"{job_config.lr_scheduler.decay_type} decay over stage {decay[0].name!r} (steps {decay[0].first_step}-"
        f"{steps}) towards min_lr_factor {job_config.lr_scheduler.min_lr_factor} "
        f"(decay_ratio {job_config.lr_scheduler.decay_ratio:.6g})"
    )


def check_stage_lr(job_config, spans: list[StageSpan]) -> None:
    """Stages that set the LR own the decay: no second decay setting, and the decay stage starts after warmup."""
    if not stages_set_lr(job_config.data):
        return
    sched = job_config.lr_scheduler
    # a rank sets decay_ratio from the stages (stage_lr_schedule): only a different one is a second setting
    if sched.decay_ratio is not None and sched.decay_ratio != lr_decay_ratio(spans, job_config.training.steps):
        raise TinytitanError(
            f"[lr_scheduler] decay_ratio = {sched.decay_ratio} and the [[data.stages]] lr settings both place the "
            "LR decay: remove decay_ratio (the stage with lr = 'decay' decays the LR) or the stages' lr keys"
        )
    if sched.total_steps is not None and sched.total_steps != job_config.training.steps:
        raise TinytitanError(
            f"[lr_scheduler] total_steps = {sched.total_steps} differs from training.steps = "
            f"{job_config.training.steps}, but the stages' lr settings follow the run's steps: remove total_steps"
        )
    for span in spans:
        if span.lr == "decay" and span.first_step <= sched.warmup_steps:
            raise TinytitanError(
                f"data stage {span.name!r} (lr = 'decay') starts at step {span.first_step}, inside the warmup "
                f"(lr_scheduler.warmup_steps = {sched.warmup_steps}): start the stage after step "
                f"{sched.warmup_steps} or shorten the warmup"
            )


def describe_spans(spans: list[StageSpan], tokens_per_step: int) -> list[str]:
    """One line per stage, for the launcher: its steps, tokens, weights and LR."""
    lines = []
    for span in spans:
        weights = ", ".join(f"{name} {w:.3f}" for name, w in span.weights.items() if w > 0)
        lr = {"decay": "LR decays", "stable": "LR stable", "": ""}[span.lr]
        lines.append(
            f"stage {span.index + 1}/{len(spans)} {span.name!r}: steps {span.first_step}-{span.last_step} "
            f"({span.steps() * tokens_per_step:,} tokens), {weights}" + (f", {lr}" if lr else "")
        )
    return lines

"""tinytitan's sections of the TOML job config, merged into torchtitan's JobConfig, and the checks of all of them.

Loaded by torchtitan through ``[job] custom_config_module = "tinytitan.job_config"``.

``validate_job_config`` is the one pure check of a whole job config (no file is read): every
section's own ``validate()`` plus the checks of torchtitan's sections and the checks that span
sections. Value types were checked when the config was read (``tinytitan.config``). The launcher
runs it before any process starts (``tinytitan.launcher.preflight`` adds the checks that read
files), and each rank runs it again, so ``torchrun -m torchtitan.train`` with these hooks is
guarded too.

No ``from __future__ import annotations`` here: torchtitan merges these dataclasses into its
JobConfig with ``make_dataclass``, and tyro must see real types, not strings.
"""

from dataclasses import dataclass, field
from typing import Literal

from tinytitan.data.config import Data
from tinytitan.errors import TinytitanError
from tinytitan.run_record import Run

FLOAT8_CONVERTER = "quantize.linear.float8"


@dataclass
class Model:
    """tinytitan's keys in torchtitan's ``[model]`` section (merged into it): how attention is masked."""

    attn_type: Literal["sdpa", "flex", "varlen"] = "sdpa"
    """torchtitan's attention kernel: 'sdpa' (causal only), 'flex' (FlexAttention, torch.compile'd; causal or
    block_causal), 'varlen' (block_causal only, GPU)"""
    attn_mask_type: Literal["causal", "block_causal"] = "causal"
    """'causal': a token attends to every earlier token of its window; 'block_causal' (document masking, as
    Llama 3 trained): only to earlier tokens of its own packed document, split at the tokenizer's EOS"""
    sdpa_backend: Literal["auto", "cudnn", "flash", "efficient", "math"] = "auto"
    """with attn_type = 'sdpa': the kernel torch tries first; 'auto': torchtitan's order (cuDNN, then flash)"""

    def validate(self) -> None:
        """Pure. torchtitan merges this class's fields into its own ``[model]`` dataclass (without its methods),
        so it is called as ``Model.validate(job_config.model)``."""
        attn, mask = getattr(self, "attn_type", "sdpa"), getattr(self, "attn_mask_type", "causal")
        if attn == "sdpa" and mask != "causal":
            raise TinytitanError(
                f"[model] attn_mask_type = {mask!r} needs attn_type = 'flex' (or 'varlen' on a GPU); "
                "torch's SDPA kernel masks causally only"
            )
        backend = getattr(self, "sdpa_backend", "auto")
        if backend != "auto" and attn != "sdpa":
            raise TinytitanError(
                f"[model] sdpa_backend = {backend!r} picks a kernel of attn_type = 'sdpa', not {attn!r}: "
                "set sdpa_backend = 'auto'"
            )
        if attn == "varlen" and mask != "block_causal":
            raise TinytitanError(
                "[model] attn_type = 'varlen' packs documents: set attn_mask_type = 'block_causal' (or use 'sdpa')"
            )


@dataclass
class Eval:
    """``[eval]``: lm-eval benchmark tasks scored on the training model every ``freq`` steps (docs/observe.md)."""

    tasks: list[str] = field(default_factory=list)
    """lm-eval task names, e.g. ["tinytitan_sample_order", "hellaswag"]; empty: no in-loop evaluation"""
    include_path: str = ""
    """a folder of extra lm-eval task YAML files"""
    freq: int = 0
    """evaluate every this many steps (and at the last step); 0: never"""
    limit: int = 0
    """score at most this many documents per task; 0: all"""
    num_fewshot: int = -1
    """few-shot examples; -1: each task's default"""
    batch_size: int = 16
    """requests per forward pass on each rank"""

    def task_settings(self):
        """What lm-eval runs (``tinytitan.lm_tasks.TaskSettings``); its checks name the [eval] key."""
        from tinytitan.lm_tasks import TaskSettings

        try:
            return TaskSettings(list(self.tasks), self.include_path or None, self.limit or None,
                                None if self.num_fewshot < 0 else self.num_fewshot, self.batch_size)  # fmt: skip
        except TinytitanError as e:
            raise TinytitanError(f"[eval] {e}") from None

    def validate(self) -> None:
        if not self.tasks:
            return
        if self.freq <= 0:
            raise TinytitanError(f"[eval] tasks {self.tasks} but freq {self.freq}: set freq to N >= 1")
        self.task_settings()


@dataclass
class Loss:
    """``[loss]``: how training and validation compute the output projection and cross-entropy (docs/memory.md)."""

    kind: Literal["plain", "chunked"] = "plain"
    """"chunked": projection, loss and gradients chunk by chunk inside the model, never the full
    [tokens x vocab] logits (tinytitan/rank/loss.py; no pipeline/tensor/context parallelism); "plain":
    torchtitan's cross-entropy"""
    chunk_tokens: int = 8192
    """tokens per chunk with kind = "chunked"; one chunk holds [chunk_tokens x vocab] logits and gradients"""

    def validate(self, parallelism, converters: list[str], float8_filter_fqns: list[str]) -> None:
        """Pure: [loss], and what the chunked loss cannot run with (``tinytitan.rank.loss``)."""
        if self.chunk_tokens < 1:
            raise TinytitanError(f"[loss] chunk_tokens = {self.chunk_tokens} must be at least 1 (e.g. 8192)")
        if self.kind != "chunked":
            return
        for name in ("pipeline_parallel_degree", "tensor_parallel_degree", "context_parallel_degree"):
            degree = getattr(parallelism, name)
            if degree > 1:
                raise TinytitanError(
                    f'[loss] kind = "chunked" supports FSDP only, not [parallelism] {name} = {degree}: '
                    'use [loss] kind = "plain" with it'
                )
        if FLOAT8_CONVERTER in converters and "output" not in float8_filter_fqns:
            raise TinytitanError(
                '[loss] kind = "chunked" keeps the output projection in bf16: add "output" to '
                '[quantize.linear.float8] filter_fqns, or use [loss] kind = "plain"'
            )


@dataclass
class Hang:
    """``[hang]``: how the launcher notices a rank that stopped making progress (README: Faults and resuming)."""

    stall_seconds: float = -1
    """a hang: no rank's heartbeat (step and phase) moved for this long inside a training step while a rank is
    behind the others; the launcher then prints that rank's stack and restarts every rank (when no rank is behind,
    it waits train_timeout_seconds). Below [comm] train_timeout_seconds. -1: half of train_timeout_seconds; 0: off
    (a hang then ends when a collective times out)"""

    def validate(self, train_timeout_seconds: float) -> None:
        """Pure: one line naming the key and the fix."""
        if self.stall_seconds < 0 and self.stall_seconds != -1:
            raise TinytitanError(
                f"[hang] stall_seconds = {self.stall_seconds:g} is negative: give seconds, -1 (half of "
                "[comm] train_timeout_seconds) or 0 (off)"
            )
        if self.stall_seconds >= train_timeout_seconds:
            raise TinytitanError(
                f"[hang] stall_seconds = {self.stall_seconds:g} is not below [comm] train_timeout_seconds = "
                f"{train_timeout_seconds:g}: a collective would time out first; lower it, or 0 to turn it off"
            )

    def effective(self, train_timeout_seconds: float) -> float:
        """The stall time in seconds, 0 when off."""
        return train_timeout_seconds / 2 if self.stall_seconds == -1 else self.stall_seconds


def stall_seconds(job_config) -> float:
    """The effective ``[hang] stall_seconds`` of a full JobConfig (0: off)."""
    return job_config.hang.effective(job_config.comm.train_timeout_seconds)


@dataclass
class JobConfig:
    data: Data = field(default_factory=Data)
    eval: Eval = field(default_factory=Eval)
    loss: Loss = field(default_factory=Loss)
    model: Model = field(default_factory=Model)
    hang: Hang = field(default_factory=Hang)
    run: Run = field(default_factory=Run)  # written by the launcher into <dump_folder>/run.toml


def _require(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        section, _, name = key.rpartition(".")
        raise TinytitanError(f"[{section}] {name} = {value!r}: {rule}")


def validate_job_config(job_config, world_size: int | None = None) -> None:
    """Every value check of a job config, pure; ``world_size`` (all ranks) adds the batch arithmetic."""
    from tinytitan.models import FLAVORS, SPEC_NAME

    model, training, opt, sched = job_config.model, job_config.training, job_config.optimizer, job_config.lr_scheduler
    if model.name == SPEC_NAME and model.flavor not in FLAVORS:
        raise TinytitanError(
            f"[model] flavor = {model.flavor!r} is unknown: choose one of {', '.join(FLAVORS)} "
            "(tinytitan/models.py defines them)"
        )
    _require(training.steps >= 1, "training.steps", training.steps, "train at least 1 step")
    _require(training.seq_len >= 1, "training.seq_len", training.seq_len, "it must be at least 1")
    _require(training.local_batch_size >= 1, "training.local_batch_size", training.local_batch_size,
             "it must be at least 1")  # fmt: skip
    _require(training.max_norm > 0, "training.max_norm", training.max_norm, "clip gradients at a norm > 0")
    _require(opt.lr > 0, "optimizer.lr", opt.lr, "the learning rate must be > 0")
    _require(opt.eps > 0, "optimizer.eps", opt.eps, "it must be > 0 (e.g. 1e-8)")
    _require(opt.weight_decay >= 0, "optimizer.weight_decay", opt.weight_decay, "it must be >= 0 (e.g. 0.1)")
    for key in ("beta1", "beta2"):
        value = getattr(opt, key)
        _require(0 <= value < 1, f"optimizer.{key}", value, "it must be in [0, 1)")
    _require(sched.warmup_steps >= 0, "lr_scheduler.warmup_steps", sched.warmup_steps, "it must be >= 0")
    _require(0 <= sched.min_lr_factor <= 1, "lr_scheduler.min_lr_factor", sched.min_lr_factor,
             "it must be in [0, 1]")  # fmt: skip
    if sched.decay_ratio is not None:
        _require(0 <= sched.decay_ratio <= 1, "lr_scheduler.decay_ratio", sched.decay_ratio, "it must be in [0, 1]")
    _require(job_config.metrics.log_freq >= 1, "metrics.log_freq", job_config.metrics.log_freq, "it must be >= 1")
    ckpt = job_config.checkpoint
    if ckpt.enable:
        _require(ckpt.interval >= 1, "checkpoint.interval", ckpt.interval, "save every N >= 1 steps")
    if ckpt.initial_load_path and not ckpt.enable:
        raise TinytitanError(
            f"[checkpoint] initial_load_path = {ckpt.initial_load_path!r} but enable = false, and torchtitan loads "
            "nothing when checkpointing is off: set [checkpoint] enable = true"
        )
    Model.validate(model)
    val = job_config.validation
    if val.enable:
        _require(val.freq >= 1, "validation.freq", val.freq, "validate every N >= 1 steps")
        _require(val.steps == -1 or val.steps >= 1, "validation.steps", val.steps, "use -1 (all) or N >= 1")
        _require(val.seq_len >= 1, "validation.seq_len", val.seq_len, "it must be at least 1")
        _require(val.local_batch_size >= 1, "validation.local_batch_size", val.local_batch_size, "it must be >= 1")
    for key in ("init_timeout_seconds", "train_timeout_seconds"):
        value = getattr(job_config.comm, key)
        _require(value > 0, f"comm.{key}", value, "it must be > 0 seconds")
    job_config.data.validate()
    job_config.eval.validate()
    job_config.hang.validate(job_config.comm.train_timeout_seconds)
    validate_loss(job_config)
    p = job_config.parallelism
    if job_config.eval.tasks:
        for name, degree in (("tensor", p.tensor_parallel_degree), ("pipeline", p.pipeline_parallel_degree),
                             ("context", p.context_parallel_degree)):  # fmt: skip
            if degree > 1:
                raise TinytitanError(
                    f"[eval] runs on data-parallel (FSDP/DDP) models only; this run has {name}_parallel_degree "
                    f"= {degree}: remove the [eval] tasks or the {name} parallelism"
                )
    _require(training.global_batch_size != 0, "training.global_batch_size", 0,
             "use -1 (local_batch_size x data-parallel ranks) or a positive multiple of that")  # fmt: skip
    if job_config.data.stages and (world_size is not None or training.global_batch_size > 0):
        from tinytitan.data.stages import check_stage_lr, run_spans

        check_stage_lr(job_config, run_spans(job_config, world_size or 1))  # stage ends inside the run
    if world_size is not None and training.global_batch_size > 0:
        model_ranks = p.tensor_parallel_degree * p.pipeline_parallel_degree * p.context_parallel_degree
        dp = max(1, world_size // max(1, model_ranks))
        per_step = training.local_batch_size * dp
        if training.global_batch_size % per_step:
            raise TinytitanError(
                f"[training] global_batch_size = {training.global_batch_size} is not a multiple of local_batch_size "
                f"{training.local_batch_size} x {dp} data-parallel ranks = {per_step}: set global_batch_size to a "
                f"multiple of {per_step} (gradient accumulation makes up the rest)"
            )


def validate_loss(job_config) -> None:
    """``[loss]`` of a full JobConfig (``Loss.validate`` with the sections it depends on)."""
    job_config.loss.validate(
        job_config.parallelism, job_config.model.converters, job_config.quantize.linear.float8.filter_fqns
    )

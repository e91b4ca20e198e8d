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
from tinytitan.run.record import Run

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
class Optimizer:
    """tinytitan's keys in torchtitan's ``[optimizer]`` section (merged into it): the settings of
    ``name = "Muon"`` (tinytitan/rank/muon.py, docs/recipes.md). With Muon, ``lr`` is the LR of the hidden
    matrices, ``weight_decay`` applies to every group and ``beta1``/``beta2``/``eps`` to the AdamW part."""

    momentum: float = 0.95
    """Muon: momentum of the hidden matrices' gradients, in [0, 1)"""
    nesterov: bool = True
    """Muon: Nesterov momentum (the update is grad + momentum x buffer)"""
    ns_steps: int = 5
    """Muon: Newton-Schulz iterations that orthogonalize each update (>= 1; 5 is the usual)"""
    adamw_lr: float = 3e-3
    """Muon: LR of the AdamW part (the norms, and the embedding and output unless set below)"""
    embed_lr: float = 0.0
    """Muon: LR of the token embedding (AdamW); 0: adamw_lr"""
    output_lr: float = 0.0
    """Muon: LR of the output projection (AdamW); 0: adamw_lr"""
    muon_params: list[str] = field(default_factory=lambda: ["layers.*.attention.w*", "layers.*.feed_forward.w*"])
    """Muon: fnmatch patterns of the parameter names Muon trains (2-D hidden matrices only)"""


def validate_optimizer(job_config) -> None:
    """``[optimizer]``: the name, and with Muon its keys and the groups it would build (on the meta device)."""
    opt = job_config.optimizer
    if opt.name not in ("AdamW", "Adam", "Muon"):
        raise TinytitanError(f'[optimizer] name = {opt.name!r} is unknown: use "AdamW", "Adam" or "Muon"')
    if opt.name != "Muon":
        return
    _require(0 <= opt.momentum < 1, "optimizer.momentum", opt.momentum, "Muon's momentum must be in [0, 1), e.g. 0.95")
    _require(opt.ns_steps >= 1, "optimizer.ns_steps", opt.ns_steps,
             "Muon needs at least 1 Newton-Schulz step (5 is the usual)")  # fmt: skip
    _require(opt.adamw_lr > 0, "optimizer.adamw_lr", opt.adamw_lr, "the AdamW part's LR must be > 0")
    for key in ("embed_lr", "output_lr"):
        _require(getattr(opt, key) >= 0, f"optimizer.{key}", getattr(opt, key), "use 0 (adamw_lr) or an LR > 0")
    if opt.early_step_in_backward:
        raise TinytitanError(
            "[optimizer] early_step_in_backward = true: Muon orthogonalizes whole matrices after the backward; "
            "set it to false"
        )
    from tinytitan.models import FLAVORS, SPEC_NAME

    if job_config.model.name == SPEC_NAME and job_config.model.flavor in FLAVORS:
        from tinytitan.models import check_flavor_groups

        check_flavor_groups(job_config.model.flavor, list(opt.muon_params))


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


@dataclass
class Ema:
    """``[ema]``: an exponential moving average of the weights, kept beside them in every checkpoint
    (docs/averaging.md); ``tinytitan export/eval/generate --weights ema`` use it."""

    enable: bool = False
    """keep the average: after each optimizer step, ema <- decay_t * ema + (1 - decay_t) * weights"""
    decay: float = 0.99
    """the average's decay per optimizer step, in (0, 1); its half-life is ln(0.5) / ln(decay) steps
    (0.99: 69 steps, 0.999: 693); take about a tenth of the run"""
    warmup: bool = True
    """decay_t = min(decay, (1 + step) / (10 + step)): the first steps' weights (and the random init) fade fast
    instead of weighing on the average for a half-life; false: decay_t = decay from step 1"""

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimizer step ``step`` (1-based)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    def validate(self, last_save_model_only: bool) -> None:
        """Pure: one line naming the key and the fix."""
        if not self.enable:
            return
        if not 0 < self.decay < 1:
            raise TinytitanError(
                f"[ema] decay = {self.decay:g} is not in (0, 1): give the per-step decay, e.g. 0.99 "
                "(a half-life of 69 steps)"
            )
        if last_save_model_only:
            raise TinytitanError(
                "[ema] enable = true but [checkpoint] last_save_model_only = true: the last checkpoint would hold the "
                "raw weights only, not the average; set last_save_model_only = false"
            )


@dataclass
class Guard:
    """``[guard]``: steps that would harm the weights are skipped, a divergence is rolled back (docs/guard.md)."""

    enable: bool = True
    """skip non-finite steps and spikes, roll back on divergence, mark checkpoints healthy or suspect"""
    window: int = 100
    """a spike is judged against the loss and gradient norm of up to this many recent applied steps"""
    warmup: int = 20
    """no spike is judged before this many applied steps are in the window (non-finite steps always are)"""
    z_threshold: float = 6.0
    """a step whose loss or gradient norm is more than this many standard deviations above the window's
    mean is a spike, and skipped; 0: never (only non-finite steps are skipped)"""
    max_skipped: int = 5
    """this many skipped steps in a row is a divergence: roll back to the newest healthy checkpoint"""
    max_rollbacks: int = 3
    """rollbacks without recovery (no healthy checkpoint saved past the divergence) before the run stops"""
    rollback_skip_steps: int = -1
    """after a rollback to step C from a divergence at step D, skip the data of this many steps; -1: D - C
    (every step from the checkpoint to the divergence)"""
    stats_freq: int = 100
    """per-layer gradient and weight norms and update-to-weight ratios every this many steps; 0: never"""

    def validate(self) -> None:
        """Pure: one line naming the key and the fix."""
        for key, low in (("window", 2), ("warmup", 2), ("max_skipped", 1), ("max_rollbacks", 0), ("stats_freq", 0)):
            value = getattr(self, key)
            if value < low:
                raise TinytitanError(f"[guard] {key} = {value} must be at least {low}")
        if self.warmup > self.window:
            raise TinytitanError(f"[guard] warmup = {self.warmup} exceeds window = {self.window}: lower warmup")
        if self.z_threshold < 0:
            raise TinytitanError(f"[guard] z_threshold = {self.z_threshold:g} is negative: e.g. 6, or 0 for off")
        if self.rollback_skip_steps < -1:
            raise TinytitanError(
                f"[guard] rollback_skip_steps = {self.rollback_skip_steps}: give N >= 0 steps, or -1 (every step "
                "from the checkpoint to the divergence)"
            )


def stall_seconds(job_config) -> float:
    """The effective ``[hang] stall_seconds`` of a full JobConfig (0: off)."""
    return job_config.hang.effective(job_config.comm.train_timeout_seconds)


@dataclass
class JobConfig:
    data: Data = field(default_factory=Data)
    eval: Eval = field(default_factory=Eval)
    loss: Loss = field(default_factory=Loss)
    model: Model = field(default_factory=Model)
    optimizer: Optimizer = field(default_factory=Optimizer)
    hang: Hang = field(default_factory=Hang)
    ema: Ema = field(default_factory=Ema)
    guard: Guard = field(default_factory=Guard)
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
    validate_optimizer(job_config)
    job_config.data.validate()
    job_config.eval.validate()
    job_config.hang.validate(job_config.comm.train_timeout_seconds)
    job_config.ema.validate(ckpt.enable and ckpt.last_save_model_only)
    job_config.guard.validate()
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

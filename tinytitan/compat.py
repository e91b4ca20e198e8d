"""Every private name of torchtitan (and torch) that tinytitan touches, in one place.

tinytitan pins ``torchtitan==0.2.2`` and extends it through its public hooks. A few things
have no public hook; each is reached here and nowhere else, so an upgrade that renames one
fails in this module with one line naming it, and ``tests/test_compat.py`` checks every name
against the installed torchtitan.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from tinytitan.errors import TinytitanError

TESTED_TORCHTITAN = "0.2.2"


def _private(owner: Any, name: str) -> Any:
    """``owner.name``, or one line saying which private name the installed torchtitan lacks."""
    try:
        return getattr(owner, name)
    except AttributeError:
        where = getattr(owner, "__name__", type(owner).__name__)
        raise TinytitanError(
            f"the installed torchtitan has no {where}.{name}, which tinytitan uses (tinytitan.compat): "
            f"install torchtitan=={TESTED_TORCHTITAN}"
        ) from None


# ---------------------------------------------------------------- TrainSpec registry


def spec_registered(name: str) -> bool:
    """Whether a TrainSpec of that name is registered (``register_train_spec`` raises on a second one)."""
    from torchtitan.protocols import train_spec

    return name in _private(train_spec, "_extra_train_specs")


# ---------------------------------------------------------------- CheckpointManager
# A preemption checkpoint is a full-state save of the step just finished, outside the interval,
# synchronous, whatever last_save_model_only says: torchtitan's public save() cannot do that.


def checkpoint_folder(checkpointer, step: int) -> str:
    """The ``step-N`` folder torchtitan writes and resumes from."""
    return _private(checkpointer, "_create_checkpoint_id")(step)


def checkpoint_due(checkpointer, step: int, last_step: bool) -> bool:
    """Whether torchtitan's own save of this step (interval or last step) is due."""
    return _private(checkpointer, "_should_save")(step, last_step=last_step)


def wait_for_async_save(checkpointer) -> None:
    """Waits for an async save still in flight."""
    _private(checkpointer, "_async_wait")()


def full_training_state(checkpointer) -> dict[str, Any]:
    """Model, optimizer, LR scheduler, data loader and train state, as torchtitan saves them."""
    return _private(checkpointer, "_flattened_model_states_sd")()


# ---------------------------------------------------------------- the device torchtitan runs on
# torchtitan picks "cuda" at import (torchtitan.tools.utils.device_type / device_module) and each module
# copies the two names when it is imported: the CPU mode rewrites them in every torchtitan module.


def retarget_torchtitan_device(device_type: str, device_module) -> None:
    """Points torchtitan's module globals ``device_type`` / ``device_module`` (copied into each module at
    import) at ``device_type`` and ``device_module`` instead of CUDA."""
    import sys

    import torch
    import torchtitan.tools.utils as tt_utils

    tt_utils.device_type, tt_utils.device_module = device_type, device_module
    for name, module in list(sys.modules.items()):
        if name.startswith("torchtitan") and module is not None:
            if getattr(module, "device_type", None) == "cuda":
                module.device_type = device_type
            if getattr(module, "device_module", None) is torch.cuda:
                module.device_module = device_module


def wrap_method(owner, name: str, wrapper) -> None:
    """Replaces ``owner.name`` (a bound method of a torchtitan part, e.g. the checkpointer's ``save``) with
    ``wrapper(original)`` on that one object: torchtitan calls these parts directly, with no hook between."""
    setattr(owner, name, wrapper(getattr(owner, name)))


# ---------------------------------------------------------------- Transformer


def rope_table(model):
    """The RoPE table (``freqs_cis``) of a torchtitan llama3 ``Transformer``, computed by its own method: the
    buffer is non-persistent, so a model loaded from a checkpoint on the meta device must recompute it."""
    return _private(model, "_precompute_freqs_cis")()


SDPA_BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "math": "MATH"}  # fmt: skip


def prefer_sdpa_backend(model, first: str) -> int:
    """Puts torch's SDPA kernel ``first`` (a key of ``SDPA_BACKENDS``) at the head of the kernel priority of
    each of ``model``'s torchtitan SDPA modules, the others after it in torchtitan's order (cuDNN, flash,
    math); returns how many modules it set. torchtitan keeps that list in a per-module attribute."""
    from torch.nn.attention import SDPBackend
    from torchtitan.models.attention import ScaledDotProductAttentionWrapper

    chosen = getattr(SDPBackend, SDPA_BACKENDS[first])
    count = 0
    for module in model.modules():
        if isinstance(module, ScaledDotProductAttentionWrapper):
            default = list(_private(module, "sdpa_backends"))
            module.sdpa_backends = [chosen, *(b for b in default if b != chosen)]
            count += 1
    return count


@contextmanager
def flex_attention_compiled_by(backend: str):
    """While open, torchtitan's FlexAttention and block-mask builder are compiled by torch.compile ``backend``
    (e.g. "eager": traced, not code-generated) instead of inductor with max-autotune, which takes minutes on
    a small CPU. FlexAttention runs only compiled; torchtitan holds both compiled functions in private names."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    from torchtitan.models import attention

    wrapper = attention.FlexAttentionWrapper
    saved = _private(wrapper, "_compiled_flex_attn"), _private(attention, "_compiled_create_block_mask")
    wrapper._compiled_flex_attn = torch.compile(flex_attention, backend=backend)
    attention._compiled_create_block_mask = torch.compile(create_block_mask, backend=backend)
    try:
        yield
    finally:
        wrapper._compiled_flex_attn, attention._compiled_create_block_mask = saved


# ---------------------------------------------------------------- torch.distributed


def set_group_timeout(group, seconds: float) -> None:
    """A process group's collective timeout, changed after creation (torchtitan does so after step 1)."""
    from torch.distributed import distributed_c10d

    _private(distributed_c10d, "_set_pg_timeout")(timedelta(seconds=seconds), group)


def foreach_lerp_(tensors: list, ends: list, weight: float) -> None:
    """``t += weight * (end - t)`` for every pair, in one fused pass (the [ema] update; torch has no public name)."""
    import torch

    _private(torch, "_foreach_lerp_")(tensors, ends, weight)


# ---------------------------------------------------------------- Validator
# tinytitan validates on each source's held-out split with torchtitan's own Validator (its __init__
# and its validate loop); only the C4 text loader its __init__ builds is replaced, per source.


@contextmanager
def validator_without_text_loader():
    """While it is open, torchtitan's ``Validator.__init__`` builds no text validation loader (a Hub
    download of C4): tinytitan's ``HeldOutValidator`` sets its own, one per source."""
    from torchtitan.components import validate

    original = _private(validate, "build_text_validation_dataloader")
    validate.build_text_validation_dataloader = lambda **kwargs: None
    try:
        yield
    finally:
        validate.build_text_validation_dataloader = original


# ---------------------------------------------------------------- lm-eval
# simple_evaluate records `git describe --always` with git's stderr inherited: outside a git checkout
# every `eval tasks` printed "fatal: not a git repository". Its evaluator module holds the function.


@contextmanager
def lm_eval_quiet_git():
    """While it is open, lm-eval's evaluator looks the commit up with git's stderr discarded."""
    import os
    import subprocess

    from lm_eval import evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    original = _private(evaluator, "get_git_commit_hash")

    def quiet() -> str | None:
        try:
            done = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return get_commit_from_path(os.getcwd())
        return done.stdout.strip() if done.returncode == 0 else get_commit_from_path(os.getcwd())

    evaluator.get_git_commit_hash = quiet
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


# ---------------------------------------------------------------- gradient norm
# torchtitan's Trainer.train_step clips with ``dist_utils.clip_grad_norm_`` and keeps the total norm
# to itself until it logs it (log steps only). The guard (tinytitan.rank.guard) judges every step on
# it before the optimizer step: the function is wrapped once, in place, to hand the norm over.

_grad_norm_listeners: list = []


def on_grad_norm(listener) -> None:
    """``listener(total_norm)`` after each ``clip_grad_norm_`` of torchtitan's train step (the latest listener only)."""
    from torchtitan.distributed import utils as dist_utils

    clip = _private(dist_utils, "clip_grad_norm_")
    if not getattr(clip, "tinytitan_wrapped", False):

        def clip_and_tell(*args, **kwargs):
            total_norm = clip(*args, **kwargs)
            for tell in _grad_norm_listeners:
                tell(total_norm)
            return total_norm

        clip_and_tell.tinytitan_wrapped = True
        dist_utils.clip_grad_norm_ = clip_and_tell
    _grad_norm_listeners[:] = [listener]

"""The thin CPU layer: lets torchtitan's real Trainer run without an accelerator.

torchtitan 0.2.2 assumes an accelerator: it falls back to device type "cuda",
calls device-module functions that ``torch.cpu`` lacks (set_device, memory
statistics, device properties) and FSDP2 reduce-scatters with AVG, which gloo
rejects. ``activate()`` fixes exactly these, and does nothing when an
accelerator is present.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys
from types import SimpleNamespace

import torch

logger = logging.getLogger(__name__)

_active = False


def has_accelerator() -> bool:
    return torch.accelerator.is_available()


def cpu_mode() -> bool:
    """True once ``activate()`` switched torchtitan to the CPU."""
    return _active


def _peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux and bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _total_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


class CpuDeviceModule:
    """What torchtitan calls on ``torch.cuda``, answered for the host CPU."""

    def __getattr__(self, name):
        return getattr(torch.cpu, name)

    @staticmethod
    def set_device(device) -> None:
        pass

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def get_device_name(device=None) -> str:
        return f"CPU ({platform.processor() or platform.machine()})"

    @staticmethod
    def get_device_properties(device=None):
        return SimpleNamespace(total_memory=_total_ram_bytes() or 1)

    @staticmethod
    def memory_stats(device=None) -> dict:
        peak = _peak_rss_bytes()
        return {
            "active_bytes.all.peak": peak,
            "reserved_bytes.all.peak": peak,
            "num_alloc_retries": 0,
            "num_ooms": 0,
        }

    @staticmethod
    def reset_peak_memory_stats(device=None) -> None:
        pass

    @staticmethod
    def empty_cache() -> None:
        pass


def activate() -> bool:
    """Point torchtitan at the CPU when there is no accelerator. Returns True if it did."""
    global _active
    if _active:
        return True
    if has_accelerator():
        return False
    from tinytitan.compat import retarget_torchtitan_device

    retarget_torchtitan_device("cpu", CpuDeviceModule())
    _active = True
    return True


def adapt_job_config(job_config) -> None:
    """Settings the CPU cannot honour, changed with one log line. No-op on GPU."""
    if not _active:
        return
    changes = cpu_changes(job_config)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    logger.info(
        "CPU mode: no accelerator found; torchtitan runs on CPU with gloo, FSDP over %d processes, fp32%s",
        world,
        f" ({', '.join(changes)})" if changes else "",
    )


def cpu_changes(job_config) -> list[str]:
    """Changes ``job_config`` to what a CPU run uses; returns them, one phrase each. The launcher applies them
    to the run's record too, so ``run.toml`` says what ran (foreach, float32), not what was asked for."""
    changes = []
    training = job_config.training
    if training.mixed_precision_param != "float32":
        changes.append(f"mixed_precision_param {training.mixed_precision_param}->float32")
        training.mixed_precision_param = "float32"
    if training.dtype != "float32":
        changes.append(f"dtype {training.dtype}->float32")
        training.dtype = "float32"
    if job_config.compile.enable:
        changes.append("compile off")
        job_config.compile.enable = False
    if job_config.profiling.enable_profiling:  # torchtitan 0.2.2 hands the profiler a None activity
        changes.append("profiling off: torchtitan's profiler needs a GPU")
        job_config.profiling.enable_profiling = False
    if job_config.optimizer.implementation == "fused":
        changes.append("optimizer fused->foreach")
        job_config.optimizer.implementation = "foreach"
    if getattr(job_config.model, "attn_type", "sdpa") == "flex":  # no FlexAttention backward on the CPU
        changes.append(f"flex attention as SDPA with the exact {job_config.model.attn_mask_type} mask")
    if job_config.comm.trace_buf_size > 0:  # NCCL's flight recorder: nothing to record on gloo, only an empty folder
        changes.append("no NCCL flight recorder (comm_traces/)")
        job_config.comm.trace_buf_size = 0
    return changes


def fsdp_sum_reductions(model: torch.nn.Module) -> None:
    """gloo has no AVG/PREMUL_SUM reduce-scatter; FSDP2 can divide after a SUM instead."""
    if not _active:
        return
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_force_sum_reduction_for_comms(True)

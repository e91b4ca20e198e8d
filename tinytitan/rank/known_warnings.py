"""Third-party warnings a user cannot act on, each explained once instead of repeated.

torchtitan and torch warn about things that are expected here (no ``lspci``, no known peak FLOPS
for a CPU, DTensor's random ops on a CPU mesh, ...). Each known warning belongs to a group; the
first record of a group is replaced by one ``note:`` line saying what it means, later records of
the group are dropped. Every other warning passes unchanged: nothing is hidden wholesale.

On CPU, MFU is n/a (there is no peak to measure a CPU against), so torchtitan's A100 fallback
and its MFU figure are replaced by that note, and the step line says ``mfu: n/a``.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

logger = logging.getLogger("tinytitan.notes")


@dataclass(frozen=True)
class Known:
    group: str
    pattern: re.Pattern
    cpu_only: bool = False


MFU_ON_CPU = "MFU is n/a on CPU: torchtitan knows no peak FLOPS for a CPU (it would measure against an A100)"
NOTES = {
    "mfu-cpu": MFU_ON_CPU,
    "peak-flops": "torchtitan does not know this GPU's peak FLOPS: MFU below is measured against an A100's (312 TFLOPS)",
    "lspci": "lspci is not installed: torchtitan names the GPU from torch instead (only used to pick the peak for MFU)",
    "hf-index": "torchtitan looks for an HF weights index to save HF-format checkpoints; tinytitan saves DCP "
    "checkpoints, which need none",
    "nccl-env": "torchrun sets TORCH_NCCL_ASYNC_ERROR_HANDLING=1 and torchtitan raises it to 3 so that NCCL can "
    "dump its flight recorder on a timeout",
    "dtensor-cpu": "torch says DTensor's random ops may be incomplete on a CPU mesh: with [debug] seed set, "
    "CPU runs still reproduce bit for bit (tested)",
    "pg-timeout": "torch cannot change the timeout of one of torchtitan's process groups on CPU: that group keeps "
    "[comm] init_timeout_seconds",
}
LOG_RECORDS = (
    Known("mfu-cpu", re.compile(r"^Peak flops undefined for: "), cpu_only=True),
    Known("mfu-cpu", re.compile(r"^Error running lspci"), cpu_only=True),
    Known("mfu-cpu", re.compile(r"^Peak FLOPS used for computing MFU"), cpu_only=True),
    Known("peak-flops", re.compile(r"^Peak flops undefined for: ")),
    Known("lspci", re.compile(r"^Error running lspci")),
    Known("hf-index", re.compile(r"^model\.safetensors\.index\.json not found")),
    Known("nccl-env", re.compile(r"^ENV\[TORCH_NCCL_ASYNC_ERROR_HANDLING\] = 1 will be overridden to 3")),
)
PY_WARNINGS = (
    Known(
        "dtensor-cpu", re.compile(r"DTensor (random operators|manual_seed\(\)) may not have complete support on cpu")
    ),
    Known("pg-timeout", re.compile(r"^Set timeout is now only supported for either nccl or gloo"), cpu_only=True),
)
MFU_FIGURE = re.compile(r"mfu: [0-9.]+%")


class Explainer(logging.Filter):
    """A filter on torchtitan's logger (the root logger) and a ``warnings.showwarning`` in front of Python's."""

    def __init__(self, cpu: bool):
        super().__init__()
        self.cpu = cpu
        self.explained: set[str] = set()
        self._show = warnings.showwarning

    def _group(self, known: tuple[Known, ...], text: str) -> str | None:
        for k in known:
            if (self.cpu or not k.cpu_only) and k.pattern.search(text):
                return k.group
        return None

    def _note(self, group: str) -> str | None:
        if group in self.explained:
            return None
        self.explained.add(group)
        return f"note: {NOTES[group]}"

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self.cpu and "mfu: " in text and "step:" in text:
            record.msg, record.args = MFU_FIGURE.sub("mfu: n/a", text), ()
            return True
        group = self._group(LOG_RECORDS, text)
        if group is None:
            return True
        note = self._note(group)
        if note is None:
            return False
        record.msg, record.args, record.levelno, record.levelname = note, (), logging.INFO, "INFO"
        return True

    def showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        group = self._group(PY_WARNINGS, str(message))
        if group is None:
            self._show(message, category, filename, lineno, file, line)
            return
        note = self._note(group)
        if note is not None:
            logging.getLogger().info(note)


def install(cpu: bool) -> Explainer:
    """Explains the known warnings of this process from now on."""
    explainer = Explainer(cpu)
    logging.getLogger().addFilter(explainer)
    warnings.showwarning = explainer.showwarning
    return explainer

"""tinytitan's sections of the TOML job config, merged into torchtitan's JobConfig.

Loaded by torchtitan through ``[job] custom_config_module = "tinytitan.job_config"``.
"""

from dataclasses import dataclass, field

from tinytitan.data.config import Data
from tinytitan.errors import TinytitanError


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
    hang: Hang = field(default_factory=Hang)

"""tinytitan's sections of the TOML job config, merged into torchtitan's JobConfig.

Loaded by torchtitan through ``[job] custom_config_module = "tinytitan.job_config"``.
"""

from dataclasses import dataclass, field
from typing import Literal

from tinytitan.data.config import Data


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
class Loss:
    """``[loss]``: how training and validation compute the output projection and cross-entropy (docs/memory.md)."""

    kind: Literal["plain", "chunked"] = "plain"
    """"chunked": projection, loss and gradients chunk by chunk inside the model, never the full
    [tokens x vocab] logits (tinytitan/rank/loss.py; no pipeline/tensor/context parallelism); "plain":
    torchtitan's cross-entropy"""
    chunk_tokens: int = 8192
    """tokens per chunk with kind = "chunked"; one chunk holds [chunk_tokens x vocab] logits and gradients"""


@dataclass
class JobConfig:
    data: Data = field(default_factory=Data)
    eval: Eval = field(default_factory=Eval)
    loss: Loss = field(default_factory=Loss)

"""Where exported weights come from: a DCP checkpoint, or a Meta-format folder.

Both give flat torchtitan names (which are also Meta's names) and load one
tensor at a time, so the writers never hold more than one tensor beyond what
they write. The Meta source exists for ``util/2-convert_llama_weights_to_hf.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from tinytitan.checkpoint.stats import RunStats, checkpoint_stats
from tinytitan.errors import TinytitanError

META_WEIGHTS = "consolidated.00.pth"
META_PARAMS = "params.json"


class DcpSource:
    def __init__(self, checkpoint):
        self.checkpoint = checkpoint
        self.description = f"checkpoint {checkpoint.path}"
        self.weights = checkpoint.weights  # "raw" or "ema" (the average of the weights, [ema])

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return self.checkpoint.shapes()

    def names(self) -> list[str]:
        return list(self.checkpoint.model)

    def load(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.checkpoint.load_tensor(name, dtype)

    def run_stats(self) -> RunStats:
        return checkpoint_stats(self.checkpoint)


class MetaSource:
    """``consolidated.00.pth`` + ``params.json``; the weights are memory-mapped, not read up front."""

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        weights = folder / META_WEIGHTS
        if not weights.is_file():
            raise TinytitanError(f"{folder} has no {META_WEIGHTS}: pass the folder that `--format meta` wrote")
        try:
            self.state = torch.load(weights, mmap=True, weights_only=True, map_location="cpu")
        except Exception as e:
            raise TinytitanError(f"cannot read {weights} ({type(e).__name__}): the file is damaged") from None
        params = folder / META_PARAMS
        self.params = json.loads(params.read_text()) if params.is_file() else {}
        self.description = f"Meta-format folder {folder}"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.state.items()}

    def names(self) -> list[str]:
        return list(self.state)

    def load(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        t = self.state[name]
        return t.to(dtype) if dtype is not None and dtype != t.dtype else t

    def run_stats(self) -> RunStats:
        return RunStats()

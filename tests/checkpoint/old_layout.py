"""Builds an older-layout checkpoint (torchtitan < 0.2) from a current one, for the upgrade tests.

Older torchtitan saved ``{"model": {...}, "optimizer": ..., ...}``: model keys under
``model.`` and the RoPE table ``freqs_cis`` persisted. This writes exactly that with
DCP in one process, from the tensors and values of a real checkpoint.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def load_everything(step_dir: Path) -> dict:
    """The whole checkpoint, nested as it was saved (small models only: everything in memory)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp_to_torch_save(step_dir, path)
        return torch.load(path, weights_only=False)


def write_old_layout(step_dir: Path, out: Path, *, seq_len: int = 256, model_only: bool = False) -> dict:
    """Writes ``out`` in the older layout; returns the model tensors it wrote (flat names)."""
    import torch.distributed.checkpoint as dcp

    from tinytitan.checkpoint.flavors import fitting_flavor
    from tinytitan.models import build_torchtitan, flavor_args

    state = load_everything(step_dir)
    roots = ("optimizer", "lr_scheduler", "dataloader", "train_state")
    model = {k: v for k, v in state.items() if k not in roots}
    args = flavor_args(fitting_flavor({k: tuple(v.shape) for k, v in model.items()}))
    freqs = build_torchtitan(args, dict(model), seq_len).freqs_cis  # torchtitan's own RoPE table for seq_len
    old = {"model": {**model, "freqs_cis": freqs}}
    if not model_only:
        old.update({k: state[k] for k in roots if k in state})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(old, storage_writer=dcp.FileSystemWriter(str(out)), no_dist=True)
    return model

"""``[ema]``: an exponential moving average of the weights, kept in each rank beside the weights and saved in
every checkpoint (docs/averaging.md).

After each optimizer step, ``ema <- decay_t * ema + (1 - decay_t) * weights`` with ``decay_t`` from
``tinytitan.job_config.Ema.decay_at(step)``. Each average tensor is a clone of its parameter: under FSDP a
DTensor with the parameter's mesh and placements, so a rank holds and updates only its own shard (no
communication) and DCP saves and reshards it like the model. The update runs on the local shards with one
fused ``foreach`` lerp over all parameters.

In the checkpoint the average is the Stateful ``ema`` of torchtitan's CheckpointManager: its tensors are
stored as ``ema.<name>``, ``<name>`` being the model's own state-dict key (``tok_embeddings.weight``), so a
reader swaps ``ema.<name>`` for ``<name>`` (``tinytitan.checkpoint.reader``, ``--weights ema``).
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.stateful import Stateful

from tinytitan.compat import foreach_lerp_
from tinytitan.errors import TinytitanError

STATE_KEY = "ema"  # the CheckpointManager state, the checkpoint keys' prefix (tinytitan.checkpoint.reader)
WRAPPER_PARTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")  # compile, AC, FSDP1


def state_dict_name(parameter_name: str) -> str:
    """A parameter's name without the wrappers' module names (torch.compile, activation checkpointing):
    the key the model's state dict, hence the checkpoint, uses."""
    return ".".join(part for part in parameter_name.split(".") if part not in WRAPPER_PARTS)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard (a DTensor's local tensor; under no_grad the tensor itself, not a copy)."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


class WeightAverage(Stateful):
    """The EMA of every parameter of ``model_parts``; ``model_keys``: the model's state-dict keys, checked."""

    def __init__(self, model_parts, config, model_keys=None):
        self.model_parts = list(model_parts)
        self.config = config
        self.loaded = False  # set when a checkpoint's average was loaded into it
        with torch.no_grad():
            self.average = {name: p.detach().clone() for name, p in self._parameters()}
        if model_keys is not None:
            missing = sorted(set(self.average) - set(model_keys))
            if missing:
                raise TinytitanError(
                    f"[ema] parameters {missing[:3]} have no key of the same name in the model's state dict: "
                    "the average could not be exported; turn [ema] off or report this model wrapper"
                )

    def _parameters(self):
        for part in self.model_parts:
            for name, p in part.named_parameters():
                yield state_dict_name(name), p

    def _local_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # Looked up at each update (a dict walk): FSDP may give a parameter new local storage after set-up.
        params = dict(self._parameters())
        names = list(self.average)
        return [_local(self.average[n]) for n in names], [_local(params[n]) for n in names]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step ``step``: every average moves toward its weights by ``1 - decay_at(step)``."""
        averages, weights = self._local_pairs()
        weight = 1.0 - self.config.decay_at(step)
        if averages:
            same = [a.dtype == w.dtype for a, w in zip(averages, weights, strict=True)]
            if all(same):
                foreach_lerp_(averages, weights, weight)
            else:  # a converter changed a parameter's dtype: lerp in the average's dtype
                for a, w in zip(averages, weights, strict=True):
                    a.lerp_(w.to(a.dtype), weight)

    @torch.no_grad()
    def copy_from_model(self) -> None:
        """The average restarts at the current weights (a run starting, or a checkpoint saved without one)."""
        averages, weights = self._local_pairs()
        for a, w in zip(averages, weights, strict=True):
            a.copy_(w)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.average  # DCP loads into these tensors in place

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in state_dict.items():
                if value is not self.average[name]:
                    self.average[name].copy_(value)
        self.loaded = True

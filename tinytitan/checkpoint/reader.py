"""Reads torchtitan DCP checkpoints one tensor at a time, in either layout.

A full training checkpoint is about three times the model (weights plus two
AdamW moments), so exporting through a ``torch.save`` of the whole state needs
that much memory. Here the ``.metadata`` file lists every key with its shape and
dtype, and each tensor is then loaded on its own with ``dcp.load`` of a one-entry
state dict: peak memory stays near the largest single tensor.

Two layouts exist. torchtitan 0.2.2 saves model keys at the top level
(``tok_embeddings.weight``) next to ``optimizer``, ``lr_scheduler``,
``dataloader`` and ``train_state``; older torchtitan saved them under a
``model.`` prefix and also persisted the RoPE table ``freqs_cis``. Both read the
same here: names are always the flat torchtitan names, ``freqs_cis`` is skipped.

A run with ``[ema]`` also saves the average of the weights as ``ema.<name>`` (``tinytitan.rank.ema``);
``open_checkpoint(..., weights="ema")`` reads those in place of the raw weights, under the same names.

``open_checkpoint(..., light=True)`` lists the checkpoint and reads its small values without importing torch
(``tinytitan.checkpoint.light``; torch's reader takes over for what that cannot read, and for every tensor):
what ``checkpoint inspect`` uses.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tinytitan.checkpoint import light as light_reader
from tinytitan.checkpoint.completeness import METADATA, folder_problem, saved_step_folders
from tinytitan.errors import TinytitanError
from tinytitan.run.folder import step_of
from tinytitan.run.hold import hold_checkpoint, missing_checkpoint

if TYPE_CHECKING:
    import torch

MODEL_PREFIX = "model."
FREQS_CIS = "freqs_cis"
EMA_ROOT = "ema"  # tinytitan.rank.ema.STATE_KEY
STATE_ROOTS = ("optimizer", "lr_scheduler", "dataloader", "train_state", EMA_ROOT)
WEIGHTS = ("raw", "ema")


@dataclass(frozen=True)
class TensorEntry:
    """One model tensor as stored: its checkpoint key and its flat torchtitan name."""

    key: str
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype  # or, from a light listing, a ``light.DType`` (same ``str()`` and ``itemsize``)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def _reader_class():
    from torch.distributed.checkpoint import FileSystemReader

    class CachedReader(FileSystemReader):
        """Unpickles ``.metadata`` once, not once per tensor."""

        _cached = None

        def read_metadata(self, *args, **kwargs):
            if args or kwargs:
                return super().read_metadata(*args, **kwargs)
            if self._cached is None:
                self._cached = super().read_metadata()
            return self._cached

    return CachedReader


def _load(state: dict, reader) -> None:
    """``dcp.load`` in this process only (no process group needed), without its warning saying so."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.load(state, storage_reader=reader, no_dist=True)


def resolve_checkpoint(path: str | os.PathLike, step: int | str | None = None) -> Path:
    """A step folder, or a checkpoint folder (or the run folder above it) plus ``step``."""
    path = Path(path)
    if not path.exists():
        raise TinytitanError(missing_checkpoint(path))
    if (path / METADATA).is_file():
        if step not in (None, "latest") and step_of(path) not in (None, int(step)):
            raise TinytitanError(f"{path} is the checkpoint of one step; --step {step} applies to a checkpoint folder")
        return path
    steps = dict(saved_step_folders(path) or saved_step_folders(path / "checkpoint"))
    if not steps:
        raise TinytitanError(
            f"{path} is not a DCP checkpoint (no {METADATA}) and has no step-N checkpoints: "
            "pass a step folder such as outputs/debug/checkpoint/step-20"
        )
    listed = ", ".join(str(s) for s in sorted(steps))
    if step is None:
        raise TinytitanError(
            f"{path} holds the checkpoints of steps {listed}: add --step N or --step latest (or --all to list them)"
        )
    if step == "latest":
        return steps[max(steps)]
    try:
        return steps[int(step)]
    except (KeyError, ValueError):
        raise TinytitanError(f"{path} has no checkpoint for step {step}: it has steps {listed}") from None


@dataclass
class Checkpoint:
    """The listing of a DCP checkpoint, and tensor-by-tensor access to its model."""

    path: Path
    metadata: object
    layout: str  # "flat" (torchtitan >= 0.2) or "prefixed" (model keys under "model.")
    freqs_cis_key: str | None
    model: dict[str, TensorEntry]  # flat torchtitan name -> entry, in checkpoint order
    other_keys: list[str] = field(default_factory=list)
    _reader: object = None
    weights: str = "raw"  # "ema": ``model`` points at the average's tensors (``ema.<name>``)
    light: bool = False  # ``metadata`` is ``light``'s stand-in: torch's reader is made when a tensor is read

    @property
    def reader(self):
        """torch's DCP reader of this checkpoint (made on first use: it imports torch)."""
        if self._reader is None:
            self._reader = _reader_class()(str(self.path))
        return self._reader

    # -- listing -------------------------------------------------------------------------
    def has_state(self, root: str) -> bool:
        return any(k == root or k.startswith(root + ".") for k in self.other_keys)

    @property
    def has_ema(self) -> bool:
        """Whether it holds an average of the weights ([ema]) for every model tensor."""
        keys = self.metadata.state_dict_metadata
        return all(f"{EMA_ROOT}.{name}" in keys for name in self.model)

    @property
    def resumable(self) -> bool:
        """What torchtitan needs to continue training rather than start from these weights."""
        return self.has_state("optimizer") and self.has_state("dataloader") and self.has_state("train_state")

    @property
    def model_bytes(self) -> int:
        return sum(e.nbytes for e in self.model.values())

    def check_complete(self) -> None:
        """One line naming what is missing or short, instead of DCP's EOFError on reading it."""
        problem = folder_problem(self.path)
        if problem is not None:
            raise TinytitanError(
                f"checkpoint {self.path} is incomplete: {problem} (a truncated copy or an interrupted save); "
                "copy it again or use an earlier step"
            )

    @property
    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: e.shape for name, e in self.model.items()}

    def dtypes(self) -> dict[str, int]:
        """Model dtypes, e.g. {"float32": 38}."""
        return dict(Counter(str(e.dtype).removeprefix("torch.") for e in self.model.values()))

    # -- reading -------------------------------------------------------------------------
    def load_tensor(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One whole model tensor (all shards joined), optionally cast."""
        import torch

        entry = self.model[name]
        target = torch.empty(entry.shape, dtype=getattr(torch, str(entry.dtype).removeprefix("torch.")))
        _load({entry.key: target}, self.reader)
        return target if dtype is None or dtype == target.dtype else target.to(dtype)

    def iter_tensors(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.model:
            yield name, self.load_tensor(name, dtype)

    def read_value(self, key: str, default=None):
        """A non-tensor entry such as ``train_state.step``; ``default`` when absent."""
        if key not in self.metadata.state_dict_metadata:
            return default
        if self.light:
            try:
                return light_reader.read_value(self.path, self.metadata, key)
            except light_reader.Unreadable:
                pass  # a tensor, or bytes this reader does not know: torch's reader
        import torch

        meta = self.reader.read_metadata().state_dict_metadata[key]
        if hasattr(meta, "size"):  # stored as a tensor (older torchtitan kept the step as one)
            value = torch.empty(meta.size, dtype=meta.properties.dtype)
        else:
            value = None
        box = {key: value}
        _load(box, self.reader)
        return box[key]

    def train_state(self) -> dict:
        """``{"step": int | None, "ntokens_seen": int | None}`` from the checkpoint or its folder name."""
        out = {}
        for k in ("step", "ntokens_seen"):
            v = self.read_value(f"train_state.{k}")
            out[k] = int(v.item() if hasattr(v, "item") else v) if v is not None else None  # older: a tensor
        if out["step"] is None:
            out["step"] = step_of(self.path)
        return out


def open_checkpoint(
    path: str | os.PathLike,
    step: int | str | None = None,
    *,
    check: bool = True,
    weights: str = "raw",
    hold: bool = True,
    light: bool = False,
) -> Checkpoint:
    """Reads only ``.metadata`` (and the data files' sizes); tensors are loaded later, one at a time.

    ``check``: refuse a checkpoint whose data files are shorter than ``.metadata`` says. ``weights``: "raw"
    (the trained weights) or "ema" (their average, refused in one line when the run kept none). ``hold``: keep
    the step folder from the purge of a training in its run for as long as this process lives
    (``tinytitan.run.hold``; not for the launcher of that training). ``light``: list it without torch where
    ``tinytitan.checkpoint.light`` can (else, and for a damaged file, torch's reader as without it).
    """
    folder = resolve_checkpoint(path, step)
    if hold and hold_checkpoint(folder) and not folder.exists():  # the purge deleted it before the hold
        raise TinytitanError(missing_checkpoint(folder))
    reader, metadata = None, None
    if light:
        try:
            metadata = light_reader.read_metadata(folder)
        except light_reader.Unreadable:
            light = False
    try:
        if metadata is None:
            reader = _reader_class()(str(folder))
            metadata = reader.read_metadata()
    except Exception as e:  # a truncated or foreign file
        raise TinytitanError(
            f"cannot read {folder / METADATA} ({type(e).__name__}): the checkpoint is damaged"
        ) from None
    keys = metadata.state_dict_metadata
    prefixed = any(k.startswith(MODEL_PREFIX) for k in keys)
    model: dict[str, TensorEntry] = {}
    other: list[str] = []
    freqs_key = None
    for key, meta in keys.items():
        root = key.split(".", 1)[0]
        if root in STATE_ROOTS or (prefixed and not key.startswith(MODEL_PREFIX)):
            other.append(key)
            continue
        name = key[len(MODEL_PREFIX) :] if prefixed else key
        if name == FREQS_CIS:
            freqs_key = key
            continue
        if type(meta).__name__ != "TensorStorageMetadata":  # torch's class, or light's stand-in
            other.append(key)
            continue
        model[name] = TensorEntry(key, name, tuple(meta.size), meta.properties.dtype)
    if not model:
        raise TinytitanError(f"checkpoint {folder} holds no model tensors: is it a torchtitan checkpoint?")
    ckpt = Checkpoint(folder, metadata, "prefixed" if prefixed else "flat", freqs_key, model, other, reader,
                      light=light)  # fmt: skip
    if weights not in WEIGHTS:
        raise TinytitanError(f"--weights {weights} is unknown: choose raw or ema")
    if weights == "ema":
        if not ckpt.has_ema:
            raise TinytitanError(
                f"checkpoint {folder} holds no average of the weights (the run had no [ema] enable = true): "
                "use --weights raw"
            )
        ckpt.model = {n: TensorEntry(f"{EMA_ROOT}.{n}", n, e.shape, keys[f"{EMA_ROOT}.{n}"].properties.dtype)
                      for n, e in ckpt.model.items()}  # fmt: skip
        ckpt.weights = "ema"
    if check:
        ckpt.check_complete()
    return ckpt

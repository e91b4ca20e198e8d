"""A trained model in one process, for evaluation and sampling: a checkpoint or an HF export.

``from_checkpoint`` builds torchtitan's own ``Transformer`` for the flavor (the
model training ran, not a re-implementation) in float32 and fills it from the
DCP checkpoint without a process group; flavor and tokenizer come from the run's
record next to the checkpoint (``tinytitan.run.record``), or a ``--config`` that
overrides it. ``from_hf`` loads an export with transformers; its step and tokens come
from the export's ``tinytitan.json``. Both give the same interface, so evaluation
and generation code does not care which, and agreement between the two checks the
export. ``load(ModelChoice)`` picks one of the two as the CLI's flags say.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinytitan.errors import TinytitanError


@dataclass
class LanguageModel:
    """Logits and a tokenizer, whichever format the weights came from.

    The tokenizer comes from ``tinytitan.tokenizer.load_tokenizer`` in both cases (an export
    ships ``tokenizer.json``), the loader training and the data loader use, so text becomes the
    same ids whichever way the model was loaded.
    """

    name: str
    module: torch.nn.Module
    tokenizer: Any
    max_seq_len: int
    hf: bool
    device: torch.device
    step: int | None = None  # the training step it holds (None: unknown)
    tokens: int | None = None  # tokens trained on, all ranks (None: unknown)
    trained: Any = None  # tinytitan.run.record.TrainedRun of its run, where known
    trained_seq_len: int | None = None  # the sequence length training used, when known

    @property
    def context(self) -> int:
        """The longest sequence the model was made for: what it was trained on, within its RoPE range."""
        return min(self.max_seq_len, self.trained_seq_len or self.max_seq_len)

    def encode(self, text: str) -> list[int]:
        """Ids without special tokens, as the data loader encodes a document's text."""
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_id

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, past=None, cache: bool = False) -> tuple[torch.Tensor, Any]:
        """Logits [B, T, vocab] in float32 for token ids [B, T].

        With ``cache`` an HF model also returns its KV cache, to be passed back as ``past`` with
        only the new tokens; torchtitan's model has no cache and returns None (callers re-run it).
        """
        ids = ids.to(self.device)
        if self.hf:
            if not cache:
                return self.module(input_ids=ids, use_cache=False).logits.float(), None
            # transformers 5 renamed past_key_values to cache (the old name warns, then goes).
            name = "cache" if "cache" in inspect.signature(self.module.forward).parameters else "past_key_values"
            out = self.module(input_ids=ids, use_cache=True, **{name: past})
            return out.logits.float(), getattr(out, name)
        return self.module(ids).float(), None


def pick_device(name: str | None) -> torch.device:
    if name in (None, "cpu"):
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TinytitanError(f"--device {name}: no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def from_checkpoint(
    checkpoint: str | os.PathLike,
    config: str | os.PathLike | None = None,
    step: int | str | None = "latest",
    device=None,
    trained=None,
    weights: str = "raw",
) -> LanguageModel:
    """torchtitan's model from a DCP checkpoint; ``trained`` (a ``TrainedRun``) or else the run's record
    (``config`` overrides it) gives the flavor and the tokenizer. ``weights``: "raw", or "ema" (the average
    of the weights, ``[ema]``)."""
    from tinytitan.checkpoint.flavors import require_flavor
    from tinytitan.checkpoint.reader import open_checkpoint
    from tinytitan.checkpoint.stats import checkpoint_stats
    from tinytitan.models import build_torchtitan, flavor_args
    from tinytitan.run.record import read_trained_run
    from tinytitan.tokenizer import load_tokenizer

    trained = trained or read_trained_run(checkpoint, config, required="--checkpoint")
    ckpt = open_checkpoint(checkpoint, step, weights=weights)  # before the tokenizer: --weights ema refused at once
    tokenizer = load_tokenizer(_tokenizer_dir(trained))
    flavor = require_flavor(ckpt.shapes(), trained.flavor, str(ckpt.path))
    args = flavor_args(flavor)
    model = build_torchtitan(args, dict(ckpt.iter_tensors(torch.float32)))
    device = pick_device(device)
    stats = checkpoint_stats(ckpt)
    return LanguageModel(
        name=f"{ckpt.path} ({flavor}{', EMA weights' if weights == 'ema' else ''})",
        module=model.to(device).eval(),
        tokenizer=tokenizer,
        max_seq_len=args.max_seq_len,
        hf=False,
        device=device,
        trained_seq_len=trained.seq_len,
        step=stats.step,
        tokens=stats.ntokens_seen,
        trained=trained,
    )


def _tokenizer_dir(trained) -> Path:
    if trained.tokenizer_dir is None:
        raise TinytitanError(
            f"{trained.path} has no [model] hf_assets_path: set it to the tokenizer folder training used"
        )
    return trained.tokenizer_dir


def from_random_init(config=None, seed: int | None = None, device=None) -> LanguageModel:
    """The model as training initialises it (torchtitan's ``init_weights``) with the run's ``[debug] seed``
    (or ``seed``), before any step: the chance baseline of a benchmark. ``config``: a TOML or a ``TrainedRun``."""
    from torchtitan.models.llama3 import Transformer

    from tinytitan.models import flavor_args
    from tinytitan.run.record import TrainedRun, read_trained_run
    from tinytitan.tokenizer import load_tokenizer

    trained = config if isinstance(config, TrainedRun) else read_trained_run(None, config, required="--random-init")
    if seed is None:
        seed = trained.job.debug.seed if trained.job.debug.seed is not None else 0
    args = flavor_args(trained.flavor)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model = Transformer(args)
        model.init_weights()
    device = pick_device(device)
    return LanguageModel(
        name=f"random init ({trained.flavor}, seed {seed})",
        module=model.to(device).eval(),
        tokenizer=load_tokenizer(_tokenizer_dir(trained)),
        max_seq_len=args.max_seq_len,
        hf=False,
        device=device,
        trained_seq_len=trained.seq_len,
        step=0,
        tokens=0,
        trained=trained,
    )


def export_record(folder: str | os.PathLike) -> dict:
    """The export's ``tinytitan.json`` (step, tokens, what was trained); {} for a folder without one."""
    from tinytitan.export.static_checks import PROVENANCE_FILE

    try:
        return json.loads((Path(folder) / PROVENANCE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def from_hf(folder: str | os.PathLike, device=None, config: str | os.PathLike | None = None) -> LanguageModel:
    from transformers import AutoModelForCausalLM

    from tinytitan.export.static_checks import check_hf_folder
    from tinytitan.tokenizer import load_tokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise TinytitanError(f"{folder} has no config.json: pass the folder written by `tinytitan export --format hf`")
    check_hf_folder(folder)  # push's static checks: RoPE scaling, shapes, truncated weights
    tokenizer = load_tokenizer(folder)
    device = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).to(device).eval()
    record = export_record(folder)
    return LanguageModel(
        name=str(folder),
        module=model,
        tokenizer=tokenizer,
        max_seq_len=model.config.max_position_embeddings,
        hf=True,
        device=device,
        trained_seq_len=_trained_seq_len(record),
        step=record.get("step"),
        tokens=record.get("ntokens_seen"),
        trained=trained_of_export(record, config),
    )


def trained_of_export(record: dict, config: str | os.PathLike | None = None):
    """The run an export came from: ``config``, else the run record its tinytitan.json names, if it is still there."""
    from tinytitan.run.record import read_trained_run

    path = record.get("run_record")
    where = Path(path).parent if path and Path(path).is_file() else None
    return read_trained_run(where, config)


def _trained_seq_len(record: dict) -> int | None:
    """``seq_len`` of the export's ``tinytitan.json`` (an export made elsewhere has none)."""
    value = record.get("seq_len")
    return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load, as the CLI's flags name it: a checkpoint (and step) or an export."""

    checkpoint: Path | None = None
    step: int | str | None = "latest"
    model: Path | None = None
    config: Path | None = None  # overrides the run's record
    device: str = "cpu"
    weights: str = "raw"  # with a checkpoint: "raw" or "ema" (the average of the weights)


def load(choice: ModelChoice) -> LanguageModel:
    if choice.model is not None and choice.weights != "raw":
        raise TinytitanError(
            f"--weights {choice.weights} applies to --checkpoint: an export holds the weights it was exported "
            "with (its tinytitan.json says which); drop --weights"
        )
    if choice.model is not None:
        return from_hf(choice.model, choice.device, choice.config)
    return from_checkpoint(choice.checkpoint, choice.config, choice.step, choice.device, weights=choice.weights)

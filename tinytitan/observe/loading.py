"""A trained model in one process, for evaluation and sampling: a checkpoint or an HF export.

``from_checkpoint`` builds torchtitan's own ``Transformer`` for the flavor (the
model training ran, not a re-implementation) in float32 and fills it from the
DCP checkpoint without a process group; the tokenizer is the config's
``[model] hf_assets_path``. ``from_hf`` loads an export with transformers. Both
give the same interface, so evaluation and generation code does not care which,
and agreement between the two checks the export.
"""

from __future__ import annotations

import inspect
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
    checkpoint: str | os.PathLike, config: str | os.PathLike | None, step: int | str | None = "latest", device=None
) -> LanguageModel:
    from torchtitan.models.llama3 import Transformer
    from torchtitan.models.llama3.model.model import precompute_freqs_cis

    from tinytitan.checkpoint.flavors import require_flavor
    from tinytitan.checkpoint.reader import open_checkpoint
    from tinytitan.export.settings import read_training_config
    from tinytitan.models import flavor_args
    from tinytitan.tokenizer import load_tokenizer

    if config is None:
        raise TinytitanError("--checkpoint needs --config TOML (the training config: flavor and tokenizer)")
    settings = read_training_config(config)
    if settings.tokenizer_dir is None:
        raise TinytitanError(f"{config} has no [model] hf_assets_path: set it to the tokenizer folder training used")
    tokenizer = load_tokenizer(settings.tokenizer_dir)
    ckpt = open_checkpoint(checkpoint, step)
    flavor = require_flavor(ckpt.shapes(), settings.flavor, str(ckpt.path))
    args = flavor_args(flavor)
    with torch.device("meta"):
        model = Transformer(args)
    model.load_state_dict(dict(ckpt.iter_tensors(torch.float32)), strict=True, assign=True)
    # The RoPE table is not saved (a non-persistent buffer): compute it as torchtitan does.
    model.freqs_cis = precompute_freqs_cis(args.dim // args.n_heads, args.max_seq_len, args.rope_theta,
                                           args.rope_scaling_args)  # fmt: skip
    device = pick_device(device)
    return LanguageModel(
        name=f"{ckpt.path} ({flavor})",
        module=model.to(device).eval(),
        tokenizer=tokenizer,
        max_seq_len=args.max_seq_len,
        hf=False,
        device=device,
        trained_seq_len=settings.seq_len,
    )


def from_random_init(config: str | os.PathLike, seed: int = 0, device=None) -> LanguageModel:
    """The config's model as training initialises it (torchtitan's ``init_weights``), before any step:
    the chance baseline of a benchmark."""
    from torchtitan.models.llama3 import Transformer

    from tinytitan.export.settings import read_training_config
    from tinytitan.models import flavor_args
    from tinytitan.tokenizer import load_tokenizer

    settings = read_training_config(config)
    if settings.tokenizer_dir is None:
        raise TinytitanError(f"{config} has no [model] hf_assets_path: set it to the tokenizer folder training used")
    args = flavor_args(settings.flavor)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model = Transformer(args)
        model.init_weights()
    device = pick_device(device)
    return LanguageModel(
        name=f"random init ({settings.flavor}, seed {seed})",
        module=model.to(device).eval(),
        tokenizer=load_tokenizer(settings.tokenizer_dir),
        max_seq_len=args.max_seq_len,
        hf=False,
        device=device,
        trained_seq_len=settings.seq_len,
    )


def from_hf(folder: str | os.PathLike, device=None) -> LanguageModel:
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
    return LanguageModel(
        name=str(folder),
        module=model,
        tokenizer=tokenizer,
        max_seq_len=model.config.max_position_embeddings,
        hf=True,
        device=device,
        trained_seq_len=_trained_seq_len(folder),
    )


def _trained_seq_len(folder: Path) -> int | None:
    """``seq_len`` of the export's ``tinytitan.json`` (an export made elsewhere has none)."""
    import json

    try:
        value = json.loads((folder / "tinytitan.json").read_text()).get("seq_len")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def load(args) -> LanguageModel:
    """From the CLI's ``--checkpoint/--config/--step`` or ``--model`` (exactly one of the two)."""
    if bool(args.checkpoint) == bool(args.model):
        raise TinytitanError("pass either --checkpoint CKPT --config TOML, or --model HF_DIR")
    if args.model:
        return from_hf(args.model, args.device)
    return from_checkpoint(args.checkpoint, args.config, args.step, args.device)


def add_model_arguments(parser) -> None:
    parser.add_argument(
        "--checkpoint", default=None, help="DCP checkpoint: a step-N folder or a run's checkpoint folder"
    )
    parser.add_argument("--config", default=None, help="the training TOML (flavor, tokenizer, data)")
    parser.add_argument("--step", default="latest", help="with a checkpoint folder: the step (default latest)")
    parser.add_argument("--model", default=None, help="a Hugging Face export folder instead of a checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")

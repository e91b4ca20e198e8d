"""Static checks of an exported Hugging Face folder, before anything is loaded.

``push`` has no checkpoint to compare with, so it re-derives everything from
the folder: the flavor whose derived config.json this is, the weights' names
and shapes, the tokenizer and the card. A config.json edited by hand (say,
``rope_parameters`` removed) no longer matches any flavor and is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tinytitan.errors import TinytitanError
from tinytitan.export.safetensors_io import weight_files

PROVENANCE_FILE = "tinytitan.json"
REQUIRED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "README.md")
# config.json keys that pin the architecture; all must equal the flavor's derived values.
ARCH_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "architectures",
)  # fmt: skip
_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


@dataclass
class HFFolder:
    folder: Path
    config: dict
    flavor: str
    dtype: torch.dtype
    seq_len: int
    provenance: dict


def _flavor_of(config: dict, folder: Path) -> str:
    from tinytitan.export.hf import hf_config, rope_parameters
    from tinytitan.models import FLAVORS, flavor_args

    rope = config.get("rope_parameters") or {
        **(config.get("rope_scaling") or {}),
        "rope_theta": config.get("rope_theta"),
    }
    for name in FLAVORS:
        args = flavor_args(name)
        expected = hf_config(args, bos_id=None, eos_id=None, dtype=torch.float32)
        if all(config.get(k) == expected[k] for k in ARCH_KEYS):
            if {k: rope.get(k) for k in rope_parameters(args)} != rope_parameters(args):
                raise TinytitanError(
                    f"{folder}/config.json has RoPE {rope or 'unscaled'} but torchtitan trained with "
                    f"{rope_parameters(args)}: re-export the folder with `tinytitan export`"
                )
            return name
    raise TinytitanError(
        f"{folder}/config.json matches no tinytitan flavor: re-export the folder with `tinytitan export`"
    )


def check_hf_folder(folder: str | Path) -> HFFolder:
    """Raises a one-line error for the first thing that makes ``folder`` not a valid export."""
    from safetensors import safe_open

    from tinytitan.checkpoint.flavors import flavor_shapes
    from tinytitan.export.hf import hf_name
    from tinytitan.models import flavor_args

    folder = Path(folder)
    if not folder.is_dir():
        raise TinytitanError(f"{folder} is not a folder: pass the folder `tinytitan export` wrote")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise TinytitanError(
                f"{folder} has no {name}, so it is not a complete export: run `tinytitan export` again"
            )
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise TinytitanError(f"{folder}/config.json is not valid JSON ({e.msg})") from None
    flavor = _flavor_of(config, folder)
    files = weight_files(folder)
    if not files:
        raise TinytitanError(
            f"{folder} has no model.safetensors (nor an index of shards): run `tinytitan export` again"
        )
    flavor_arguments = flavor_args(flavor)
    expected = {hf_name(k, v, flavor_arguments): v for k, v in flavor_shapes(flavor)}
    dtypes = set()
    seen = set()
    for path in sorted(set(files.values())):
        if not path.is_file():
            raise TinytitanError(f"{folder} lacks {path.name}, which model.safetensors.index.json lists")
        try:
            with safe_open(str(path), "pt") as f:
                for name in f.keys():
                    shape = tuple(f.get_slice(name).get_shape())
                    if expected.get(name) != shape:
                        raise TinytitanError(
                            f"tensor {name} in {path.name} is {list(shape)}; flavor {flavor!r} expects {expected.get(name)}"
                        )
                    dtypes.add(f.get_slice(name).get_dtype())
                    seen.add(name)
        except TinytitanError:
            raise
        except Exception as e:
            raise TinytitanError(
                f"{path} is not a readable safetensors file ({type(e).__name__}): export again"
            ) from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise TinytitanError(f"{folder} lacks tensor {missing[0]}: export again")
    if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPES:
        raise TinytitanError(f"{folder} mixes or uses unsupported weight dtypes {sorted(dtypes)}")
    provenance = {}
    if (folder / PROVENANCE_FILE).is_file():
        provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    seq_len = int(provenance.get("seq_len") or flavor_arguments.max_seq_len)
    return HFFolder(folder, config, flavor, _DTYPES[next(iter(dtypes))], seq_len, provenance)


def reference_from_hf(folder: Path, args) -> dict[str, torch.Tensor]:
    """The folder's own weights back under torchtitan names and row order, in float32."""
    from safetensors import safe_open

    from tinytitan.export.hf import from_hf

    state = {}
    for path in sorted(set(weight_files(folder).values())):
        with safe_open(str(path), "pt") as f:
            for hf_key in f.keys():
                name, tensor = from_hf(hf_key, f.get_tensor(hf_key).float(), args)
                state[name] = tensor.contiguous()
    return state

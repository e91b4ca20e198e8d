"""The one verification of an export folder, run by ``export`` (against the checkpoint) and ``push``
(against the folder's own weights, read back from its safetensors).

- the Meta part (``consolidated.00.pth`` + ``params.json``, at the top or under ``original/``):
  exactly the reference weights in the export dtype, and the flavor's params;
- the Hugging Face part: the static checks (files, config against the flavor, weights not
  truncated), then transformers against torchtitan's model on the reference weights: logits
  at the full training length and 20 greedy tokens (``tinytitan.export.parity``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from tinytitan.export.source import META_WEIGHTS

META_SUBFOLDER = "original"  # the Meta part of an export with both formats, as in Meta's own Hub repos


def meta_part(folder: Path) -> Path | None:
    """Where an export folder keeps Meta's files: ``original/`` next to the HF files, or the folder itself."""
    for candidate in (folder / META_SUBFOLDER, folder):
        if (candidate / META_WEIGHTS).is_file():
            return candidate
    return None


def verify_export(
    folder: Path,
    args,
    reference: dict[str, torch.Tensor],
    *,
    hf: bool,
    meta: Path | None,
    seq_len: int,
    dtype: torch.dtype,
    eos_id: int | None,
    log: Callable[[str], None] = print,
):
    """Checks the export in ``folder`` against ``reference`` (torchtitan names, float32); returns the HF
    part's ``Verification`` (None without one). Raises ``TinytitanError`` on the first difference."""
    from tinytitan.export.parity import verify_hf_folder, verify_meta_folder
    from tinytitan.export.static_checks import check_hf_folder

    if meta is not None:
        verify_meta_folder(meta, args, reference, dtype)
        log(
            f"verified Meta format: {len(reference)} tensors equal the checkpoint's ({str(dtype).removeprefix('torch.')})"
        )
    if not hf:
        return None
    check_hf_folder(folder)
    verification = verify_hf_folder(folder, args, reference, seq_len=seq_len, dtype=dtype, eos_id=eos_id)
    log(f"verified with transformers: {verification.describe()}")
    return verification

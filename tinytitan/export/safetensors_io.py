"""Streams tensors into (sharded) safetensors files, one tensor in memory at a time.

``safetensors.torch.save_file`` takes the whole state dict at once, so an
export through it peaks at the full model size plus the tensor being cast. The
format is simple enough to write as we go: an 8-byte little-endian header
length, a JSON header with every tensor's dtype, shape and byte range, then the
raw bytes in header order. Shapes and dtypes are known before any tensor is
read (from the checkpoint's metadata), so the header is written first and each
tensor's bytes follow as it arrives.

Sharding follows the Hub convention: above ``max_shard_bytes`` (5 GB), files
``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tinytitan.errors import TinytitanError

MAX_SHARD_BYTES = 5 * 1000**3  # what the Hub (and transformers' save_pretrained) uses: 5 GB
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DTYPE_CODES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
}


@dataclass(frozen=True)
class Planned:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


def plan_shards(items: Sequence[Planned], max_shard_bytes: int = MAX_SHARD_BYTES) -> list[list[Planned]]:
    """Consecutive groups of at most ``max_shard_bytes`` (a larger tensor gets a shard of its own)."""
    shards: list[list[Planned]] = [[]]
    size = 0
    for item in items:
        if shards[-1] and size + item.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    return shards


def _header(items: Sequence[Planned]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for item in items:
        header[item.name] = {
            "dtype": DTYPE_CODES[item.dtype],
            "shape": list(item.shape),
            "data_offsets": [offset, offset + item.nbytes],
        }
        offset += item.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the reference writer does
    return struct.pack("<Q", len(raw)) + raw


def _write_tensor(f, item: Planned, tensor: torch.Tensor) -> None:
    if tuple(tensor.shape) != item.shape or tensor.dtype != item.dtype:
        raise ValueError(f"{item.name}: got {tuple(tensor.shape)} {tensor.dtype}, planned {item.shape} {item.dtype}")
    flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    f.write(memoryview(flat.numpy()))


def write_safetensors(
    folder: Path,
    items: Sequence[Planned],
    produce: Callable[[str], torch.Tensor],
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    on_tensor: Callable[[str], None] | None = None,
) -> list[Path]:
    """Writes every planned tensor, calling ``produce(name)`` once each, in plan order."""
    shards = plan_shards(items, max_shard_bytes)
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    written = []
    for filename, shard in zip(names, shards, strict=True):
        path = folder / filename
        with path.open("wb") as f:
            f.write(_header(shard))
            for item in shard:
                _write_tensor(f, item, produce(item.name))
                if on_tensor:
                    on_tensor(item.name)
        written.append(path)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(i.nbytes for i in items)},
            "weight_map": {i.name: fn for fn, shard in zip(names, shards, strict=True) for i in shard},
        }
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        written.append(folder / INDEX_FILE)
    return written


def check_complete(path: Path) -> None:
    """Refuses a safetensors file shorter than its header says (a truncated download or copy)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        header_len = int.from_bytes(head, "little") if len(head) == 8 else -1
        header = f.read(header_len) if 0 <= header_len <= size else b""
    try:
        entries = json.loads(header)
        end = max((e["data_offsets"][1] for k, e in entries.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        raise TinytitanError(
            f"{path} is not a readable safetensors file (its header is damaged): export or copy it again"
        ) from None
    need = 8 + header_len + end
    if size < need:
        raise TinytitanError(
            f"{path} has {size:,} of the {need:,} bytes its header describes (a truncated download or copy): "
            "export or copy it again"
        )


def weight_files(folder: Path) -> dict[str, Path]:
    """tensor name -> file, for a folder written here (or by transformers); truncated files are refused."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {name: folder / fn for name, fn in weight_map.items()}
        for path in sorted(set(files.values())):
            if path.is_file():
                check_complete(path)
        return files
    single = folder / SINGLE_FILE
    if not single.is_file():
        return {}
    check_complete(single)
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        return {name: single for name in f.keys()}

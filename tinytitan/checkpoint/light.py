"""A DCP checkpoint's listing and small values, read without importing torch.

``.metadata`` is a pickle of torch's ``torch.distributed.checkpoint.metadata`` classes. Loading it with
torch's reader imports torch, which takes seconds; what ``checkpoint inspect`` shows needs only the keys,
shapes and dtypes it lists and a few small values (``train_state.step``, the data loader's state). Here a
restricted unpickler builds plain stand-ins for exactly the classes such a file names (the DCP metadata
classes, ``torch.Size``, a dtype, a layout) and refuses every other global; a small value is the
``torch.save`` zip that DCP wrote for it, whose ``data.pkl`` holds plain Python values.

Anything else (a tensor-valued entry, an unknown class or dtype, a transform on the stored bytes, a damaged
file) raises :class:`Unreadable`, and the caller reads it with torch's own reader instead: the answer is
the same, only slower. tests/checkpoint/test_light.py compares the two readers on a real checkpoint.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

METADATA = ".metadata"
DCP_METADATA = "torch.distributed.checkpoint.metadata"
DCP_FILESYSTEM = "torch.distributed.checkpoint.filesystem"
DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
               "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1}  # fmt: skip


class Unreadable(Exception):
    """What this reader does not understand: read it with torch's reader."""


class DType:
    """A torch dtype by name: ``str()`` and ``itemsize`` as torch's."""

    def __init__(self, name: str):
        self.name = name
        self.itemsize = DTYPE_BYTES[name]

    def __str__(self) -> str:
        return f"torch.{self.name}"

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class _Fields:
    """A stand-in for one of DCP's dataclasses: its fields as attributes, nothing else."""

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            for part in state:
                self.__dict__.update(part or {})
        elif isinstance(state, dict):
            self.__dict__.update(state)
        else:
            raise Unreadable(f"{type(self).__name__} state {type(state).__name__}")


def _stand_in(name: str) -> type:
    return type(name, (_Fields,), {})


class TensorProperties(_Fields):
    def __setstate__(self, state) -> None:  # torch's __getstate__: a 5-tuple
        if not (isinstance(state, tuple) and len(state) == 5):
            raise Unreadable("TensorProperties state")
        self.dtype, self.layout, self.requires_grad, _, self.pin_memory = state


DCP_CLASSES = ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "MetadataIndex",
               "StorageMeta")  # fmt: skip
_CLASSES = {(DCP_METADATA, name): _stand_in(name) for name in DCP_CLASSES}
_CLASSES[(DCP_METADATA, "TensorProperties")] = TensorProperties
_CLASSES[(DCP_FILESYSTEM, "_StorageInfo")] = _stand_in("_StorageInfo")
_CLASSES[(DCP_METADATA, "_MEM_FORMAT_ENCODING")] = lambda value: value  # an Enum, rebuilt from its value
_CLASSES[("torch", "Size")] = tuple
for _module in ("torch._utils", "torch.serialization"):
    _CLASSES[(_module, "_get_layout")] = lambda name: name  # a layout pickles as its name, e.g. "torch.strided"
_CLASSES[("collections", "OrderedDict")] = OrderedDict
for _path in ("Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"):
    _CLASSES[("pathlib", _path)] = getattr(pathlib, _path)


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "torch" and name in DTYPE_BYTES:
            return DType(name)  # a dtype pickles as the global torch.<name> itself
        found = _CLASSES.get((module, name))
        if found is None:
            raise Unreadable(f"{module}.{name}")
        return found


class _ValueUnpickler(pickle.Unpickler):
    """Plain Python values only: any global (a tensor, a class) is left to torch's reader."""

    def find_class(self, module: str, name: str):
        raise Unreadable(f"{module}.{name}")

    def persistent_load(self, pid):
        raise Unreadable("a tensor storage")


def read_metadata(folder: str | Path):
    """``.metadata`` of a step folder, as stand-ins with the attributes torch's classes have
    (``state_dict_metadata``, ``storage_data``); :class:`Unreadable` for anything else."""
    try:
        with open(Path(folder) / METADATA, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except Unreadable:
        raise
    except Exception as e:  # damaged or cut: torch's reader says it in its words
        raise Unreadable(f"{type(e).__name__}: {e}") from None
    if type(metadata).__name__ != "Metadata" or not isinstance(getattr(metadata, "state_dict_metadata", None), dict):
        raise Unreadable("not DCP metadata")
    return metadata


def read_value(folder: str | Path, metadata, key: str):
    """The value DCP saved for a non-tensor entry ``key`` (its ``torch.save`` bytes hold plain values)."""
    meta = metadata.state_dict_metadata.get(key)
    if type(meta).__name__ != "BytesStorageMetadata":
        raise Unreadable(f"{key} is not a bytes entry")
    infos = [info for index, info in (getattr(metadata, "storage_data", None) or {}).items()
             if getattr(index, "fqn", None) == key]  # fmt: skip
    if len(infos) != 1 or getattr(infos[0], "transform_descriptors", None):
        raise Unreadable(f"{key}: {len(infos)} stored items")
    info = infos[0]
    try:
        with open(Path(folder) / info.relative_path, "rb") as f:
            f.seek(info.offset)
            blob = f.read(info.length)
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            pkl = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise Unreadable(f"{key}: no data.pkl")
            return _ValueUnpickler(io.BytesIO(archive.read(pkl[0]))).load()
    except Unreadable:
        raise
    except Exception as e:  # a short file, not a zip (torch's legacy format)
        raise Unreadable(f"{key}: {type(e).__name__}") from None

"""``tinytitan checkpoint upgrade``: older-layout checkpoints -> the layout torchtitan 0.2.2 resumes from.

Older torchtitan saved the model as a nested ``{"model": {...}}`` state, so its
keys read ``model.tok_embeddings.weight``, and it persisted the RoPE table
``freqs_cis``. torchtitan 0.2.2 flattens the model keys to the top level and
registers ``freqs_cis`` as a non-persistent buffer: it is a constant of the
architecture (a function of head_dim, the sequence length, rope_theta and the
scaling factors), recomputed whenever the model is built. Loading an old
checkpoint therefore fails with "Missing key in checkpoint state_dict".

A DCP checkpoint is a ``.metadata`` index (key -> shape, dtype, and the byte
range of each chunk in the ``.distcp`` files) plus the data files. The upgrade
renames the keys in the index and drops ``freqs_cis`` from it; the data files
are copied byte for byte. So the optimizer moments, scheduler, data-loader
position and step are kept exactly, nothing is loaded into memory, and the
result is as sharded as the original (DCP reshards at load anyway).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

from tinytitan.checkpoint.completeness import METADATA
from tinytitan.checkpoint.reader import MODEL_PREFIX, open_checkpoint
from tinytitan.errors import TinytitanError
from tinytitan.folders import check_output_folder, make_temp_dir, replace_folder


def _rename(key: str, prefixed: bool) -> str:
    return key[len(MODEL_PREFIX) :] if prefixed and key.startswith(MODEL_PREFIX) else key


def upgraded_metadata(ckpt):
    """A copy of the checkpoint's metadata with flat model keys and no ``freqs_cis``."""
    from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex

    md = ckpt.metadata
    prefixed = ckpt.layout == "prefixed"
    drop = {ckpt.freqs_cis_key} if ckpt.freqs_cis_key else set()
    keys = {}
    for key, value in md.state_dict_metadata.items():
        if key in drop:
            continue
        new = _rename(key, prefixed)
        if new in keys:
            raise TinytitanError(f"{ckpt.path} has both {key} and {new}: it is not a plain older-layout checkpoint")
        keys[new] = value
    if not isinstance(md.storage_data, dict):
        raise TinytitanError(f"{ckpt.path} was not written by DCP's file system writer: it cannot be upgraded here")
    storage = {
        MetadataIndex(_rename(idx.fqn, prefixed), idx.offset, idx.index): info
        for idx, info in md.storage_data.items()
        if idx.fqn not in drop
    }
    planner = None
    if isinstance(md.planner_data, dict):
        planner = {}
        for key, path in md.planner_data.items():
            if key in drop:
                continue
            new = _rename(key, prefixed)
            # {"model": {"x": t}} flattened to ("model", "x"); the flat layout keeps ("x",).
            planner[new] = (new,) if new != key and tuple(path[:1]) == ("model",) else path
    return Metadata(
        state_dict_metadata=keys,
        planner_data=planner if planner is not None else md.planner_data,
        storage_data=storage,
        storage_meta=getattr(md, "storage_meta", None),
        version=getattr(md, "version", None),
    )


def upgrade_checkpoint(old: str | os.PathLike, new: str | os.PathLike, *, step=None, force: bool = False) -> dict:
    """Writes the upgraded copy of ``old`` to ``new``; returns what changed."""
    ckpt = open_checkpoint(old, step)
    if ckpt.layout == "flat" and ckpt.freqs_cis_key is None:
        raise TinytitanError(f"{ckpt.path} is already in the layout torchtitan 0.2.2 resumes from: use it as it is")
    new = Path(new)
    check_output_folder(new, [("OLD", ckpt.path)], force, flag="NEW")  # NEW may sit in the same run
    metadata = upgraded_metadata(ckpt)
    data_files = sorted({info.relative_path for info in metadata.storage_data.values()})
    tmp = make_temp_dir(new)
    try:
        for name in data_files:
            shutil.copyfile(ckpt.path / name, tmp / name)
        with open(tmp / METADATA, "wb") as f:
            pickle.dump(metadata, f)
        check = open_checkpoint(tmp)
        if check.layout != "flat" or check.freqs_cis_key or check.shapes() != ckpt.shapes():
            raise TinytitanError(f"upgrading {ckpt.path} produced an unexpected layout; please report it")
        replace_folder(tmp, new)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "old": str(ckpt.path),
        "new": str(new),
        "renamed": len(ckpt.model) if ckpt.layout == "prefixed" else 0,
        "dropped": [ckpt.freqs_cis_key] if ckpt.freqs_cis_key else [],
        "kept": sorted({k.split(".", 1)[0] for k in ckpt.other_keys}),
        "files": data_files,
    }


def run(args) -> int:
    report = upgrade_checkpoint(args.old, args.new, step=args.step, force=args.force)
    print(f"upgraded {report['old']} -> {report['new']}")
    print(f"  model keys un-prefixed: {report['renamed']}; dropped: {', '.join(report['dropped']) or 'nothing'}")
    print(f"  kept as is: {', '.join(report['kept']) or 'nothing else (model-only checkpoint)'}")
    print(
        "  resume: put it at <dump_folder>/checkpoint/step-N, or pass "
        f"--checkpoint.initial_load_path {report['new']} --checkpoint.no-initial-load-model-only"
    )
    return 0

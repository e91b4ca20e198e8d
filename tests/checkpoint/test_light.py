"""``tinytitan.checkpoint.light`` (a checkpoint's listing and small values without torch) against torch's own
DCP reader, on the session's real checkpoint; and what it leaves to torch."""

from __future__ import annotations

import shutil

import pytest
from torch.distributed.checkpoint import FileSystemReader

from tinytitan.checkpoint import light
from tinytitan.checkpoint.completeness import folder_problem
from tinytitan.checkpoint.inspect import _trained_plain
from tinytitan.checkpoint.reader import open_checkpoint
from tinytitan.run.record import read_trained_run


@pytest.fixture(scope="module")
def step20(debug_run):
    return debug_run / "checkpoint" / "step-20"


def test_the_listing_is_torchs(step20):
    ours, theirs = light.read_metadata(step20), FileSystemReader(str(step20)).read_metadata()
    assert list(ours.state_dict_metadata) == list(theirs.state_dict_metadata)
    for key, meta in theirs.state_dict_metadata.items():
        mine = ours.state_dict_metadata[key]
        assert type(mine).__name__ == type(meta).__name__, key
        if hasattr(meta, "size"):
            assert mine.size == tuple(meta.size) and str(mine.properties.dtype) == str(meta.properties.dtype), key
            assert mine.properties.dtype.itemsize == meta.properties.dtype.itemsize

    def index(i) -> tuple:  # torch's MetadataIndex leaves offset unset when it is None (a class default)
        offset = getattr(i, "offset", None)
        return i.fqn, None if offset is None else tuple(offset), i.index

    stored = {index(i): (s.relative_path, s.offset, s.length) for i, s in theirs.storage_data.items()}
    assert {index(i): (s.relative_path, s.offset, s.length) for i, s in ours.storage_data.items()} == stored


def test_a_checkpoint_listed_light_reads_as_with_torch(step20):
    quick, full = open_checkpoint(step20, light=True), open_checkpoint(step20)
    assert quick.light and not full.light
    assert {n: (e.key, e.shape, str(e.dtype)) for n, e in quick.model.items()} == {
        n: (e.key, e.shape, str(e.dtype)) for n, e in full.model.items()
    }
    assert (quick.other_keys, quick.layout, quick.has_ema, quick.model_bytes, quick.dtypes()) == (
        full.other_keys, full.layout, full.has_ema, full.model_bytes, full.dtypes())  # fmt: skip
    assert quick.train_state() == full.train_state() == {"step": 20, "ntokens_seen": 20480}
    bytes_keys = [k for k, m in full.metadata.state_dict_metadata.items() if type(m).__name__ == "BytesStorageMetadata"]
    assert "dataloader.tinytitan_data" in bytes_keys
    for key in bytes_keys:
        assert quick.read_value(key) == full.read_value(key), key
    # a tensor is read by torch's reader, made when first needed
    name = "norm.weight"
    assert quick.load_tensor(name).equal(full.load_tensor(name))


def test_the_record_read_as_plain_toml_is_the_full_readers(step20):
    full = read_trained_run(step20)
    assert _trained_plain(step20, 20) == {
        "run_record": str(full.path),
        "trained_flavor": full.flavor,
        "seq_len": full.seq_len,
        "sources": [{"name": n, "weight": w} for n, w, _ in full.sources()],
        "precision": full.precision(20),
    }


def test_a_damaged_metadata_is_left_to_torch_and_named_as_before(step20, tmp_path):
    cut = tmp_path / "step-20"
    shutil.copytree(step20, cut)
    data = (cut / ".metadata").read_bytes()
    (cut / ".metadata").write_bytes(data[: len(data) // 2])
    with pytest.raises(light.Unreadable):
        light.read_metadata(cut)
    assert folder_problem(cut) == ".metadata is unreadable (UnpicklingError)"
    value = light.read_metadata(step20)
    with pytest.raises(light.Unreadable, match="not a bytes entry"):  # a tensor: torch's reader reads it
        light.read_value(step20, value, "norm.weight")

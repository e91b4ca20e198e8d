"""The output-folder rule shared by every command that writes a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinytitan.errors import TinytitanError
from tinytitan.folders import check_output_folder


def test_overlap_with_an_input_is_refused_in_both_directions_even_with_force(tmp_path):
    data = tmp_path / "run" / "checkpoint"
    data.mkdir(parents=True)
    for out in (data, data / "inside", tmp_path / "run", tmp_path, data / ".." / "."):
        with pytest.raises(TinytitanError, match="overlaps the checkpoint .*even with --force"):
            check_output_folder(Path(out), [("the checkpoint", data)], force=True)


def test_a_link_to_an_input_is_an_overlap(tmp_path):
    data = tmp_path / "ckpt"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    with pytest.raises(TinytitanError, match="overlaps"):
        check_output_folder(tmp_path / "link", [("the checkpoint", data)], force=True)


def test_a_sibling_is_fine_and_force_only_replaces_previous_outputs(tmp_path):
    data, out = tmp_path / "ckpt", tmp_path / "ckpt-hf"  # a common prefix is not containment
    data.mkdir()
    out.mkdir()
    check_output_folder(out, [("the checkpoint", data)], force=False)  # empty: fine
    (out / "old.txt").write_text("x")
    with pytest.raises(TinytitanError, match="is not empty: pass --force"):
        check_output_folder(out, [("the checkpoint", data)], force=False)
    check_output_folder(out, [("the checkpoint", data)], force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TinytitanError, match="is a file"):
        check_output_folder(tmp_path / "file", [], force=True)


def test_a_killed_runs_temp_folder_is_removed_and_named_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from tinytitan.folders import make_temp_dir

    out = tmp_path / "export"
    live = make_temp_dir(out, log=lambda line: None)  # this process: alive
    # a process that makes its temp folder and is gone before finishing, as a killed export is
    code = "import sys; from pathlib import Path; from tinytitan.folders import make_temp_dir; print(make_temp_dir(Path(sys.argv[1])))"
    dead = Path(
        subprocess.run(
            [sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    (dead / "model.safetensors").write_bytes(b"x" * 1000)
    said = []
    mine = make_temp_dir(out, log=said.append)
    assert not dead.exists() and live.is_dir() and mine.is_dir()
    assert len(said) == 1 and str(dead) in said[0] and "interrupted earlier run" in said[0]

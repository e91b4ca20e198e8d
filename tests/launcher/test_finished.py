"""The launcher's finished-run answer read without torch (``tinytitan.launcher.finished``) against the full one
(torchtitan's config reader, then ``run_folder.finished_run``), on the session's finished debug run."""

from __future__ import annotations

import os

import pytest

from tests.helpers import DEBUG_CONFIG, small_run_overrides
from tinytitan.config import load_job_config, read_toml, shipped_configs
from tinytitan.launcher.finished import TORCHTITAN_DEFAULTS, _leaves, finished_early, parse_overrides
from tinytitan.launcher.run_folder import finished_run

ENV = {**os.environ, "NGPU": "2"}


def test_the_defaults_are_torchtitans():
    from torchtitan.config import JobConfig

    defaults = JobConfig()
    for key, value in TORCHTITAN_DEFAULTS.items():
        section, name = key.split(".")
        assert getattr(getattr(defaults, section), name) == value, key


@pytest.mark.parametrize("name", ["debug", "tiny", "debug_stages", "minimal"])
def test_the_five_keys_read_as_the_full_reader_reads_them(name, tmp_path):
    """Shipped configs, and one that sets none of the keys (the defaults, as tinytitan's sections leave
    them), with and without overrides of the keys: the same values as torchtitan's reader."""
    path = shipped_configs().get(name, tmp_path / "minimal.toml")
    if name == "minimal":
        path.write_text('[model]\nname = "tinytitan"\nflavor = "debug"\n')
    for overrides in ([], ["--job.dump_folder", str(tmp_path), "--training.steps=7", "--checkpoint.no-enable",
                           "--checkpoint.load_step", "3", "--checkpoint.folder", "ck", "--metrics.save_tb_folder=t"]):  # fmt: skip
        job = load_job_config(path, overrides)
        full = {k: getattr(getattr(job, k.split(".")[0]), k.split(".")[1]) for k in TORCHTITAN_DEFAULTS}
        doc = _leaves(read_toml(path))
        quick = {**TORCHTITAN_DEFAULTS, **{k: v for k, v in doc.items() if k in TORCHTITAN_DEFAULTS},
                 **parse_overrides(overrides, TORCHTITAN_DEFAULTS, strict=False)}  # fmt: skip
        assert quick == full


def rerun(debug_run, steps: int, *extra: str) -> list[str]:
    return [*small_run_overrides(debug_run, steps, 10), "--validation.enable", "--validation.freq", "10", *extra]


@pytest.mark.parametrize(
    "steps, extra",
    [
        (20, ()),  # the rerun
        (10, ()),  # fewer steps than it has
        (10, ("--checkpoint.load_step", "10")),  # the step named
        (30, ()),  # more steps: it trains
        (20, ("--checkpoint.no-enable",)),  # no checkpoint to resume from: it trains from scratch
        (20, ("--checkpoint.folder", "elsewhere")),  # no checkpoint there
    ],
)
def test_the_quick_answer_is_the_full_answer(debug_run, steps, extra):
    overrides = rerun(debug_run, steps, *extra)
    assert finished_early(str(DEBUG_CONFIG), overrides, ENV) == finished_run(load_job_config(DEBUG_CONFIG, overrides))


@pytest.mark.parametrize(
    "extra",
    [
        ("--training.stepz", "5"),  # a typo: the full reader names it
        ("--training.local_batch_size", "four"),  # a value of the wrong type
        ("--job.config_file", "x.toml"),
        ("stray",),
        ("--model.hf_assets_path", "/nonexistent/tokenizer"),  # another setting: the full reader may refuse it
        ("--data.lanes", "1"),
    ],
)
def test_what_the_quick_reader_cannot_vouch_for_goes_to_the_full_check(debug_run, extra):
    overrides = rerun(debug_run, 20, *extra)
    assert finished_early(str(DEBUG_CONFIG), rerun(debug_run, 20), ENV) is not None
    assert finished_early(str(DEBUG_CONFIG), overrides, ENV) is None
    assert finished_early(str(DEBUG_CONFIG), rerun(debug_run, 20), {**ENV, "NGPU": "two"}) is None
    assert finished_early(str(DEBUG_CONFIG), rerun(debug_run, 20), {**ENV, "NGPU": "64"}) is None  # not its 2


def test_a_run_without_a_record_goes_to_the_full_check(debug_run, tmp_path):
    """No run.toml: nothing says which keys and types this run's config has."""
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "checkpoint").symlink_to(debug_run / "checkpoint")
    overrides = [*rerun(debug_run, 20)[2:], "--job.dump_folder", str(copy)]
    assert finished_early(str(DEBUG_CONFIG), overrides, ENV) is None
    assert finished_run(load_job_config(DEBUG_CONFIG, overrides)) is not None  # the full check still answers

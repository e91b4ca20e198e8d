"""The pure checks of a whole job config (``validate_job_config``) and the value types checked on reading.

Each case is a config that torchtitan's ConfigManager accepts and that used to crash every rank
(or train nothing) after the processes had started.
"""

from __future__ import annotations

import pytest

from tests.helpers import DEBUG_CONFIG, launch, refused_before_start
from tinytitan.config import load_job_config
from tinytitan.errors import TinytitanError
from tinytitan.job_config import validate_job_config

TOML = DEBUG_CONFIG.read_text()


def config_with(tmp_path, old: str, new: str):
    assert old in TOML
    path = tmp_path / "job.toml"
    path.write_text(TOML.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("steps = 300", 'steps = "2"', r"^\[training\] steps = '2' is a string, but it must be an integer: fix it in "
                                       r"the config file or the --training.steps override$"),
        ("weight = 0.7", "weight = inf", r"^data source 'slimpajama': weight = inf is not a finite number"),
        ("weight = 0.3", "weight = nan", r"^data source 'starcoderdata': weight = nan is not a finite number"),
        ("validation_docs = 16", 'validation_docs = "16"', r"^data source 'starcoderdata': validation_docs = '16' is a "
                                                           r"string, but it must be an integer"),
        ('text_field = "content"', "text_field = 5", r"^data source 'starcoderdata': text_field = 5 is an integer, but "
                                                     r"it must be a string"),
        ('decay_type = "cosine"', 'decay_type = "exp"', r"^\[lr_scheduler\] decay_type = 'exp' must be one of"),
        ("seed = 1234   # same", "seed = 1.5   # same", r"^\[debug\] seed = 1.5 is a number, but it must be an integer"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_named_when_the_config_is_read(tmp_path, old, new, message):
    with pytest.raises(TinytitanError, match=message):
        load_job_config(config_with(tmp_path, old, new))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--training.steps", "0"], r"^\[training\] steps = 0: train at least 1 step$"),
        (["--optimizer.lr", "-3e-3"], r"^\[optimizer\] lr = -0.003: the learning rate must be > 0$"),
        (["--optimizer.eps", "0"], r"^\[optimizer\] eps = 0.0: it must be > 0"),
        (["--optimizer.weight_decay", "-0.1"], r"^\[optimizer\] weight_decay = -0.1: it must be >= 0"),
        (["--optimizer.beta2", "1.0"], r"^\[optimizer\] beta2 = 1.0: it must be in \[0, 1\)"),
        (["--lr_scheduler.min_lr_factor", "1.5"], r"^\[lr_scheduler\] min_lr_factor = 1.5: it must be in \[0, 1\]"),
        (["--training.seq_len", "0"], r"^\[training\] seq_len = 0"),
        (["--training.global_batch_size", "0"], r"^\[training\] global_batch_size = 0: use -1"),
        (["--checkpoint.interval", "0"], r"^\[checkpoint\] interval = 0: save every N >= 1 steps"),
        (["--validation.freq", "0"], r"^\[validation\] freq = 0"),
        (["--model.flavor", "huge"], r"^\[model\] flavor = 'huge' is unknown: choose one of tiny, micro, nano, debug"),
        (["--data.sources.0.weight", "-1"], r"^data source 'slimpajama' \(path .*\): weight = -1.0 is not a positive"),
        (["--model.attn_type", "flex", "--model.sdpa_backend", "flash"], r"^\[model\] sdpa_backend = 'flash' picks"),
    ],
)
def test_values_out_of_range_are_refused(overrides, message):
    with pytest.raises(TinytitanError, match=message):
        validate_job_config(load_job_config(DEBUG_CONFIG, overrides))


def test_the_global_batch_must_split_over_the_data_parallel_ranks():
    job = load_job_config(DEBUG_CONFIG, ["--training.global_batch_size", "24"])
    validate_job_config(job)  # the world size is not known yet
    validate_job_config(job, world_size=3)  # 8 x 3 = 24
    with pytest.raises(TinytitanError, match=r"global_batch_size = 24 is not a multiple of local_batch_size 8 x 2 "
                                             r"data-parallel ranks = 16: set global_batch_size to a multiple of 16"):  # fmt: skip
        validate_job_config(job, world_size=2)


def test_the_launcher_refuses_before_any_process_starts(tmp_path):
    """Through the launcher: one line, exit 2, no traceback, no torchrun (these crashed every rank before)."""
    for overrides, env, expected in (
        (["--training.steps", "0"], {}, "[training] steps = 0: train at least 1 step"),
        ([], {"CONFIG_FILE": str(config_with(tmp_path, "steps = 300", 'steps = "2"'))}, "[training] steps = '2'"),
    ):
        proc = launch([*overrides, "--job.dump_folder", str(tmp_path / "run")], env=env, check=False, timeout=120)
        assert expected in refused_before_start(proc, tmp_path / "run")

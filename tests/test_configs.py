"""Every shipped TOML parses through torchtitan's ConfigManager with tinytitan's extension."""

from pathlib import Path

import pytest

from tests.helpers import REPO
from tinytitan.config import load_job_config
from tinytitan.models import FLAVORS

CONFIGS = sorted((REPO / "train_configs").glob("*.toml"))


def parse(path: Path, *overrides: str):
    return load_job_config(path, overrides)


def test_there_are_configs_for_every_flavor():
    assert {p.stem for p in CONFIGS} == {f"llama3_{f}" for f in FLAVORS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_with_tinytitan_sections(path):
    cfg = parse(path)
    assert cfg.model.name == "tinytitan" and cfg.model.flavor in FLAVORS
    assert cfg.job.custom_config_module == "tinytitan.job_config"
    assert cfg.experimental.custom_import == "tinytitan.register"
    assert cfg.checkpoint.enable and not cfg.checkpoint.last_save_model_only
    assert cfg.metrics.enable_tensorboard and cfg.debug.seed is not None
    assert len(cfg.data.sources) >= 2 and all(s.weight > 0 for s in cfg.data.sources)


@pytest.mark.parametrize("flavor", ["tiny", "micro", "nano"])
def test_h100_configs_follow_the_tinyllama_recipe(flavor):
    cfg = parse(REPO / f"train_configs/llama3_{flavor}.toml")
    assert cfg.training.mixed_precision_param == "bfloat16" and cfg.compile.enable
    assert cfg.training.seq_len == 2048 and cfg.training.max_norm == 1.0
    assert (cfg.optimizer.lr, cfg.optimizer.beta1, cfg.optimizer.beta2, cfg.optimizer.weight_decay) == (
        4e-4,
        0.9,
        0.95,
        0.1,
    )
    assert cfg.lr_scheduler.warmup_steps == 2000 and cfg.lr_scheduler.decay_type == "cosine"
    assert cfg.lr_scheduler.min_lr_factor == 0.1
    assert cfg.model.hf_assets_path == "assets/tokenizer/llama3"
    # the global batch divides evenly for 8, 16 and 32 GPUs
    for gpus in (8, 16, 32):
        assert cfg.training.global_batch_size % (cfg.training.local_batch_size * gpus) == 0


def test_cli_overrides_win_over_the_toml():
    cfg = parse(REPO / "train_configs/llama3_debug.toml", "--training.steps", "7", "--job.dump_folder", "/tmp/x")
    assert cfg.training.steps == 7 and cfg.job.dump_folder == "/tmp/x"


def test_debug_config_passes_the_start_checks():
    from tinytitan.config import load_job_config
    from tinytitan.launcher.preflight import preflight

    preflight(load_job_config(REPO / "train_configs/llama3_debug.toml"), world_size=2, gpus=0, torch_version="2.13.0")

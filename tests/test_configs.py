"""Every shipped TOML parses through torchtitan's ConfigManager with tinytitan's extension."""

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.helpers import REPO
from tinytitan.config import CONFIG_DIR, find_config, load_job_config
from tinytitan.errors import TinytitanError
from tinytitan.job_config import validate_job_config
from tinytitan.models import FLAVORS

CONFIGS = sorted((REPO / "train_configs").glob("*.toml"))


def parse(path: Path, *overrides: str):
    return load_job_config(path, overrides)


def test_there_are_configs_for_every_flavor_and_the_stage_recipes():
    muon = {f"llama3_{f}_muon" for f in ("debug", "nano", "micro", "tiny")}
    assert {p.stem for p in CONFIGS} == {f"llama3_{f}" for f in FLAVORS} | {
        "llama3_debug_stages",
        "llama3_tiny_stages",
    } | muon


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_with_tinytitan_sections_and_passes_every_check(path):
    """The one place that validates the shipped configs (every section's ``validate()``, 8 ranks)."""
    cfg = parse(path)
    validate_job_config(cfg, world_size=8)
    assert cfg.model.name == "tinytitan" and cfg.model.flavor in FLAVORS
    assert cfg.job.custom_config_module == "tinytitan.job_config"
    assert cfg.experimental.custom_import == "tinytitan.register"
    assert cfg.checkpoint.enable and not cfg.checkpoint.last_save_model_only
    assert cfg.metrics.enable_tensorboard and cfg.debug.seed is not None
    assert len(cfg.data.sources) >= 2
    if cfg.data.stages:  # a recipe: the stages weigh the sources, the last one decays the LR
        assert all(s.weight is None for s in cfg.data.sources) and cfg.data.stages[-1].lr == "decay"
        assert all(sum(w.values()) > 0 for w in (st.weights for st in cfg.data.stages))
    else:
        assert all(s.weight > 0 for s in cfg.data.sources)


def test_the_stage_recipes_are_their_base_configs_plus_stages():
    """Same model, optimizer and batch as the config they extend; only the data, the LR decay and the folders differ."""
    for recipe, base in (("llama3_debug_stages", "llama3_debug"), ("llama3_tiny_stages", "llama3_tiny")):
        a, b = parse(REPO / f"train_configs/{recipe}.toml"), parse(REPO / f"train_configs/{base}.toml")
        for section in ("model", "optimizer", "training", "parallelism", "checkpoint", "validation", "compile"):
            assert asdict(getattr(a, section)) == asdict(getattr(b, section)), (recipe, section)
        assert [s.name for s in a.data.stages] == ["pretrain", "cooldown"]


@pytest.mark.parametrize("flavor", ["debug", "nano", "micro", "tiny"])
def test_the_muon_recipes_are_their_base_configs_with_muon(flavor):
    """Same model, data, schedule, batch and folders layout as the config they extend; only the optimizer
    (and the run folder) differ, and its AdamW part keeps the base config's settings."""
    a, b = parse(REPO / f"train_configs/llama3_{flavor}_muon.toml"), parse(REPO / f"train_configs/llama3_{flavor}.toml")
    for section in ("model", "training", "lr_scheduler", "parallelism", "checkpoint", "validation", "compile", "data"):
        assert asdict(getattr(a, section)) == asdict(getattr(b, section)), (flavor, section)
    assert a.optimizer.name == "Muon" and b.optimizer.name == "AdamW"
    assert (a.optimizer.beta1, a.optimizer.beta2, a.optimizer.eps) == (
        b.optimizer.beta1,
        b.optimizer.beta2,
        b.optimizer.eps,
    )
    assert a.optimizer.momentum == 0.95 and a.optimizer.ns_steps == 5
    assert a.job.dump_folder == b.job.dump_folder + "_muon"


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

    cfg = load_job_config(REPO / "train_configs/llama3_debug.toml")
    files = preflight(cfg, world_size=2, gpus=0, torch_version="2.13.0")
    assert sorted(files) == sorted(s.name for s in cfg.data.sources) and all(files.values())


def test_the_checkouts_train_configs_is_the_packages():
    """One copy: the configs are package data (what a wheel ships); train_configs/ links to them."""
    assert (REPO / "train_configs").resolve() == CONFIG_DIR == REPO / "tinytitan" / "train_configs"


@pytest.mark.parametrize("name", ["tiny", "llama3_tiny", "llama3_tiny.toml", "train_configs/llama3_tiny.toml"])
def test_a_shipped_config_by_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no train_configs/ here: the names resolve against the package
    monkeypatch.delenv("CONFIG_FILE", raising=False)
    assert find_config(name).resolve() == CONFIG_DIR / "llama3_tiny.toml"
    assert find_config(None).resolve() == CONFIG_DIR / "llama3_debug.toml"  # the embedded default
    assert parse(name).model.flavor == "tiny"


def test_a_file_in_the_working_directory_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_text((CONFIG_DIR / "llama3_debug.toml").read_text())
    assert find_config("tiny") == Path("tiny")


def test_an_unknown_config_lists_the_shipped_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        TinytitanError,
        match=r"config file huge does not exist: .*\(debug, debug_muon, debug_stages, micro, micro_muon, nano, nano_muon, tiny, tiny_muon, tiny_stages\)",
    ):
        find_config("huge")

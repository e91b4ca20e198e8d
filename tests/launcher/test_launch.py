"""The launcher refuses bad input before any process starts."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, refused_before_start, tree_digest
from tests.helpers import launch as run_training
from tinytitan.errors import TinytitanError
from tinytitan.launcher import launch


def run_launcher(env_extra: dict, *args: str) -> subprocess.CompletedProcess:
    return run_training(list(args), env=env_extra, check=False, timeout=120)


def test_missing_config_file_is_one_line_and_exit_2():
    proc = run_launcher({"CONFIG_FILE": "train_configs/nope.toml"})
    line = refused_before_start(proc)
    assert "nope.toml does not exist" in line and "(debug, debug_stages, micro, nano, tiny, tiny_stages)" in line


def test_a_config_folder_is_named_as_a_folder(tmp_path):
    """#22 case 14: a folder as the config said "does not exist"; now it says folder and lists what to pass."""
    (tmp_path / "mine.toml").write_text("")
    before = tree_digest(tmp_path)
    by_env = run_launcher({"CONFIG_FILE": str(tmp_path)})
    assert tree_digest(tmp_path) == before
    by_flag = subprocess.run([sys.executable, "-m", "tinytitan.cli", "train", "--config", "train_configs"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    for proc, folder, listed in ((by_env, tmp_path, "mine.toml"), (by_flag, "train_configs", "llama3_debug.toml, ")):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"tinytitan: error: config {folder} is a folder: pass one of its ")
        assert listed in err[0] and err[0].endswith(
            "or a shipped config name (debug, debug_stages, micro, nano, tiny, tiny_stages)"
        )
        assert "torch.distributed.run" not in proc.stdout


def test_unknown_toml_key_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (REPO / "train_configs/llama3_debug.toml").read_text().replace("[training]", "[training]\nstepz = 3")
    )
    proc = run_launcher({"CONFIG_FILE": str(bad)})
    assert proc.returncode == 2 and "stepz" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_tokenizer_folder_names_the_download_command(tmp_path):
    cfg = tmp_path / "tok.toml"
    cfg.write_text((REPO / "train_configs/llama3_debug.toml").read_text())
    proc = run_launcher({"CONFIG_FILE": str(cfg)}, "--model.hf_assets_path", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert "tinytitan download-tokenizer --repo-id meta-llama/Meta-Llama-3-8B" in proc.stderr


def test_a_folder_with_only_the_tiktoken_file_names_the_convert_command(tmp_path):
    """The seed's `download_tokenizer.py --tokenizer_path original` leaves only original/tokenizer.model."""
    (tmp_path / "llama3" / "original").mkdir(parents=True)
    (tmp_path / "llama3" / "original" / "tokenizer.model").write_text("IQ== 0\n")
    proc = run_launcher({}, "--model.hf_assets_path", str(tmp_path / "llama3"))
    line = refused_before_start(proc)
    model = tmp_path / "llama3" / "original" / "tokenizer.model"
    assert f"tinytitan convert-tokenizer {model} --out {tmp_path / 'llama3'}" in line


def test_big_configs_fail_at_start_without_the_llama3_tokenizer():
    if (REPO / "assets/tokenizer/llama3/tokenizer.json").exists():
        pytest.skip("the Llama 3 tokenizer is present on this machine")
    proc = run_launcher({"CONFIG_FILE": "train_configs/llama3_tiny.toml"})
    assert proc.returncode == 2 and "download-tokenizer" in proc.stderr


def test_ngpu_beyond_visible_gpus_is_refused():
    with pytest.raises(TinytitanError, match="NGPU=9 but this node has 8"):
        launch.resolve_nproc({"NGPU": "9"}, gpus=8)
    with pytest.raises(TinytitanError, match="not a number"):
        launch.resolve_nproc({"NGPU": "eight"}, gpus=8)
    assert launch.resolve_nproc({}, gpus=8) == 8
    assert launch.resolve_nproc({}, gpus=0) == 2  # CPU: two processes so FSDP shards
    cores = max(os.cpu_count() or 1, 2)
    assert launch.resolve_nproc({"NGPU": str(cores)}, gpus=0) == cores  # up to one process per core


def test_single_node_command_is_standalone_torchrun():
    cmd = launch.torchrun_command(2, ["--job.config_file", "x.toml"], {})
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc_per_node=2" in cmd
    assert cmd[-4:] == ["-m", "tinytitan.rank.main", "--job.config_file", "x.toml"]
    assert "--local-ranks-filter=0" in cmd


def test_multi_node_command_uses_c10d_rendezvous():
    env = {"NNODES": "4", "NODE_RANK": "2", "MASTER_ADDR": "node0", "MASTER_PORT": "29511", "LOG_RANK": "0,1"}
    cmd = launch.torchrun_command(8, [], env)
    for part in ("--nnodes=4", "--rdzv_backend=c10d", "--rdzv_endpoint=node0:29511", "--node_rank=2",
                 "--local-ranks-filter=0,1"):  # fmt: skip
        assert part in cmd
    assert "--standalone" not in cmd
    with pytest.raises(TinytitanError, match="MASTER_ADDR"):
        launch.torchrun_command(8, [], {"NNODES": "2"})


def test_config_module_is_added_unless_an_override_names_one():
    from tinytitan.config import training_args

    assert training_args("a.toml", [])[-2:] == ["--job.custom_config_module", "tinytitan.job_config"]
    own = training_args("a.toml", ["--job.custom_config_module=my.module"])
    assert own.count("--job.custom_config_module") == 0 and own[-1] == "--job.custom_config_module=my.module"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"NNODES": "0"}, "NNODES=0 is out of range"),
        ({"NNODES": "two"}, "NNODES='two' is not a number"),
        ({"MASTER_PORT": "abc"}, "MASTER_PORT='abc' is not a number"),
        ({"MASTER_PORT": "70000"}, "MASTER_PORT=70000 is out of range"),
        ({"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK=2 is out of range"),
        ({"LOG_RANK": "0,x"}, "LOG_RANK='0,x'"),
        ({"LOG_RANK": "5"}, "local ranks below NGPU=2"),
    ],
)
def test_launcher_variables_are_checked(env, message):
    with pytest.raises(TinytitanError, match=message):
        launch.check_launch_env(env, nproc=2)
    launch.check_launch_env({"NNODES": "2", "NODE_RANK": "1", "MASTER_PORT": "29511", "LOG_RANK": "0,1"}, nproc=2)


def test_more_cpu_processes_than_cores_is_refused_before_any_process_starts():
    line = refused_before_start(run_launcher({"NGPU": "64"}))
    assert "NGPU=64 but there is no GPU" in line and "CPU cores" in line


def test_the_default_config_trains_from_any_folder(tmp_path):
    """The embedded config's relative paths (tokenizer, sample, the config itself) resolve through the checkout."""
    import sys

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "NGPU": "2", "PYTHONPATH": str(REPO)}
    env.pop("CONFIG_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tinytitan.launcher.launch", "--training.steps", "2", "--checkpoint.interval", "2",
         "--job.dump_folder", str(tmp_path / "run"), "--validation.no-enable", "--training.local_batch_size", "2"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint" / "step-2" / ".metadata").is_file()
    assert list(work.iterdir()) == []  # nothing written where it ran


def test_async_with_pinned_memory_is_refused_where_it_cannot_work():
    from types import SimpleNamespace

    from tinytitan.launcher.preflight import check_async_checkpoint

    config = SimpleNamespace(checkpoint=SimpleNamespace(async_mode="async_with_pinned_mem"))
    with pytest.raises(TinytitanError, match="needs a GPU"):
        check_async_checkpoint(config, gpus=0, torch_version="2.13.0")
    with pytest.raises(TinytitanError, match="torchtitan#3476"):
        check_async_checkpoint(config, gpus=8, torch_version="2.11.0+cu128")
    check_async_checkpoint(config, gpus=8, torch_version="2.13.0+cu128")
    config.checkpoint.async_mode = "async"
    check_async_checkpoint(config, gpus=0, torch_version="2.11.0")


def test_max_restarts_default_depends_on_gpus_and_is_checked():
    assert launch.max_restarts({}, gpus=8) == launch.GPU_MAX_RESTARTS
    assert launch.max_restarts({}, gpus=0) == 0
    assert launch.max_restarts({"MAX_RESTARTS": "5"}, gpus=0) == 5
    with pytest.raises(TinytitanError, match="MAX_RESTARTS='x' is not a number"):
        launch.max_restarts({"MAX_RESTARTS": "x"}, gpus=8)
    cmd = launch.torchrun_command(2, [], {}, restarts=3)
    assert "--max-restarts=3" in cmd and "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT" in cmd


def test_the_chunked_loss_with_pipeline_parallelism_is_refused_at_start():
    line = refused_before_start(
        run_launcher({}, "--loss.kind", "chunked", "--parallelism.pipeline_parallel_degree", "2")
    )
    assert (
        'tinytitan: error: [loss] kind = "chunked" supports FSDP only' in line
        and "pipeline_parallel_degree = 2" in line
    )


def test_a_stall_time_the_collective_timeout_would_beat_is_refused_at_start():
    line = refused_before_start(run_launcher({}, "--comm.train_timeout_seconds", "30", "--hang.stall_seconds", "45"))
    assert line.startswith("tinytitan: error: [hang] stall_seconds = 45 is not below [comm] train_timeout_seconds")

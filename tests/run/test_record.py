"""A run knows what it ran and says so: one launch with overrides (seq_len, steps, a data path) through the launcher.

Its ``run.toml`` equals the config the ranks ran with (torchtitan's own dump of rank 0's config), the start
and end lines name what a user needs and the end's figures are metrics.jsonl's, the export made without
``--config`` states the overridden values, and a resume appends a launch to the record.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import DEBUG_CONFIG, REPO, launch, read_metrics, small_run_overrides
from tinytitan.cli import main
from tinytitan.config import load_job_config
from tinytitan.run.toml_text import flatten

CPU_CHANGES = {"optimizer.implementation", "comm.trace_buf_size"}  # the CPU layer's, logged by each rank


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    starcoder = root / "data" / "starcoderdata"  # the embedded sample's source at another path: an override
    shutil.copytree(REPO / "tinytitan" / "assets" / "sample" / "starcoderdata", starcoder)
    dump = root / "run"
    overrides = [*small_run_overrides(dump, steps=3, interval=3), "--training.seq_len", "128",
                 "--data.sources.1.path", str(starcoder), "--validation.enable", "--validation.freq", "3",
                 "--validation.steps", "1", "--validation.seq_len", "128",
                 "--job.save_config_file", "ranks_config.json"]  # fmt: skip
    proc = launch(overrides)
    return dump, proc, starcoder, overrides


def _at(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_run_toml_is_the_config_the_ranks_ran_with(run):
    dump, proc, starcoder, overrides = run
    recorded = load_job_config(dump / "run.toml")
    ranks = json.loads((dump / "ranks_config.json").read_text())  # torchtitan's dump of rank 0's JobConfig
    ranks["model"]["hf_assets_path"] = str((REPO / ranks["model"]["hf_assets_path"]).resolve())  # relative to cwd
    for source in ranks["data"]["sources"]:
        source["path"] = str((REPO / source["path"]).resolve())
    ours = flatten(recorded)
    assert set(ranks) == {key.split(".")[0] for key in ours}
    differ = {k for k, v in ours.items() if not k.startswith("run.") and _at(ranks, k) != v}
    assert differ == {"job.config_file"}, differ  # the CPU layer's changes are recorded as they ran
    assert all(ours[k] == _at(ranks, k) for k in CPU_CHANGES) and ours["optimizer.implementation"] == "foreach"
    assert "optimizer fused->foreach, no NCCL flight recorder" in proc.stdout
    text = (dump / "run.toml").read_text()
    assert 'implementation = "foreach"' in text and "c4_test" not in text  # what ran; no unused torchtitan dataset
    assert (ours["training.seq_len"], ours["training.steps"]) == (128, 3)
    assert ours["data.sources"][1]["path"] == str(starcoder)

    (segment,) = recorded.run.segments
    assert segment.start_step == 0 and segment.world_size == 2 and segment.device == "cpu"
    assert Path(segment.config_file) == DEBUG_CONFIG.resolve() and segment.precision == "float32"
    assert segment.command.endswith(" ".join(overrides)) and "NGPU=2" in segment.command
    assert segment.torchtitan_version == "0.2.2" and len(segment.tokenizer_hash) == 64
    assert re.fullmatch(r"[0-9a-f]{16}", segment.data_fingerprint)
    assert not (dump / "comm_traces").exists()  # no NCCL flight recorder on gloo: no empty folder


def test_start_and_end_lines_say_where_things_are_with_metrics_figures(run):
    dump, proc, _, _ = run
    out = proc.stdout.splitlines()
    start = out.index(next(line for line in out if line.startswith("tinytitan: training ")))
    assert out[start + 1] == f"  run folder       {dump}  (the config as run: {dump / 'run.toml'})"
    assert out[start + 2] == f"  checkpoints      {dump / 'checkpoint'}  (every 3 steps and the last)"
    assert out[start + 3] == f"  TensorBoard      tensorboard --logdir {dump / 'tb'}"
    assert out[start + 4].startswith("  resume           NGPU=2 ")

    rows = read_metrics(dump)
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "validation/loss" in r][-1]
    end = out.index("tinytitan: finished at step 3 of 3, " + f"{train[-1]['n_tokens_seen']:,} tokens seen")
    assert out[end + 1] == f"  train loss       {train[-1]['loss']:.4f} (step 3)"
    assert out[end + 2] == (f"  validation loss  {val['validation/loss']:.4f} (step 3): slimpajama "
                            f"{val['validation/slimpajama/loss']:.4f}, starcoderdata {val['validation/starcoderdata/loss']:.4f}")  # fmt: skip
    e = int(train[-1]["time/elapsed_s"])
    tps = sum(r["tps"] for r in train) / len(train)
    assert re.fullmatch(rf"  time             \d+:\d\d:\d\d wall, {e // 3600}:{e // 60 % 60:02d}:{e % 60:02d} from the "
                        rf"first logged step to the last; {tps:,.0f} tokens/s per process", out[end + 3])  # fmt: skip
    assert out[end + 4] == f"  checkpoints      {dump / 'checkpoint'}: step-3"
    assert out[end + 5:end + 8] == [f"  next             tensorboard --logdir {dump / 'tb'}",
                                    f"                   tinytitan eval loss --checkpoint {dump / 'checkpoint' / 'step-3'}",
                                    f"                   tinytitan export {dump / 'checkpoint' / 'step-3'} --out exports/run-step-3"]  # fmt: skip

    # Known third-party warnings: one note each instead; on CPU MFU is n/a
    rank0 = [line for line in out if line.startswith("[rank0]:")]
    assert sum("note: MFU is n/a on CPU" in line for line in rank0) == 1
    assert not [
        line for line in rank0 if "Peak flops undefined" in line or "lspci" in line or "fallback to A100" in line
    ]
    assert all("mfu: n/a" in line for line in rank0 if "step:" in line and "loss:" in line and "validate" not in line)
    assert all(r["mfu(%)"] is None for r in train)


def test_export_without_a_config_states_what_was_trained(run, tmp_path, capsys):
    dump, _, starcoder, _ = run
    out = tmp_path / "hf"
    assert main(["export", str(dump / "checkpoint" / "step-3"), "--out", str(out)]) == 0  # from run.toml
    assert "warning" not in capsys.readouterr().err
    card = (out / "README.md").read_text()
    for row in ("| Training steps | 3 |", "| Training sequence length | 128 |", "| Training precision | float32 |",
                "| Training data | slimpajama 70% (SlimPajama-627B), starcoderdata 30% (starcoderdata) |"):  # fmt: skip
        assert row in card
    assert "seq_len = 128" in card and f'path = "{starcoder}"' in card and "steps = 3" in card
    assert "seq_len = 2048" not in card and "steps = 300" not in card
    record = json.loads((out / "tinytitan.json").read_text())
    assert record["seq_len"] == 128 and record["step"] == 3 and record["run_record"] == str(dump / "run.toml")
    trained = record["trained"]
    assert (trained["seq_len"], trained["steps"], trained["precision"]) == (128, 3, "float32")
    assert trained["ntokens_seen"] == 3 * 2 * 4 * 128
    assert [(d["name"], d["path"]) for d in trained["data"]] == [
        ("slimpajama", str(REPO / "tinytitan" / "assets" / "sample" / "SlimPajama-627B")),
        ("starcoderdata", str(starcoder)),
    ]
    assert record["verification"]["seq_len"] == 128  # verified at the length it was trained at


def test_a_resume_appends_a_launch_to_the_record(run, tmp_path):
    from tinytitan.launcher.record import write_run_record

    dump, _, _, overrides = run
    copy = tmp_path / "run"
    shutil.copytree(dump, copy)
    more = [*overrides, "--job.dump_folder", str(copy), "--training.steps", "6"]
    write_run_record(load_job_config(DEBUG_CONFIG, more), world_size=2, gpus=0, command="again", env={})
    first, second = load_job_config(copy / "run.toml").run.segments
    assert (first.start_step, second.start_step, second.command) == (0, 3, "again")
    assert second.changed == ["training.steps: 3 -> 6"]
    assert first == load_job_config(dump / "run.toml").run.segments[0]


def test_the_summary_adds_up_the_training_time_of_every_start(tmp_path):
    """Each rank process times from its own first logged step: after a torchrun restart the rows' elapsed
    time starts again at 0. The summary sums the starts instead of reporting the last one's."""
    from tinytitan.launcher.report import end_lines, read_outcome
    from tinytitan.run.folder import RunFolder

    job_config = load_job_config(str(DEBUG_CONFIG), ["--job.dump_folder", str(tmp_path), "--training.steps", "5",
                                                     "--checkpoint.no-enable"])  # fmt: skip
    rows = [(1, 0.0), (2, 30.5), (3, 61.0), (3, 0.0), (4, 29.0), (5, 59.0)]  # a restart from step 2's checkpoint
    (tmp_path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "loss": 5.0 - s / 10, "tps": 1000.0, "time/elapsed_s": e}) + "\n" for s, e in rows
        )
    )
    outcome = read_outcome(RunFolder.of(job_config), 0)
    assert outcome.starts == 2 and outcome.training_s == 61.0 + 59.0
    (time_line,) = [line for line in end_lines(job_config, outcome, wall_s=150.0) if line.startswith("  time")]
    assert time_line == ("  time             0:02:30 wall, 0:02:00 training in 2 starts (each from its first logged "
                         "step to its last); 1,000 tokens/s per process")  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0, "time/elapsed_s": e}) + "\n" for s, e in rows[:3])
    )
    single = read_outcome(RunFolder.of(job_config), 0)
    assert single.starts == 1 and single.training_s == 61.0

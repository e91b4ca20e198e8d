"""Bad input and faults, fourth round (issue 31): refusals by name, before any rank starts, nothing written.

The cheap cases run the CLI or the launcher's entry in this process (each ends before torchrun);
the resume cases copy the ``uninterrupted`` run (checkpoints at steps N and 2N). One training
kills a data loader worker and checks that the launcher owns the output and survives it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import (
    DEBUG_CONFIG,
    REPO,
    STAGE_STEPS,
    N,
    assert_one_line_refusal,
    small_run_overrides,
    stages_run_overrides,
    tree_digest,
)
from tinytitan.cli import main as cli
from tinytitan.errors import run_guarded
from tinytitan.launcher import launch as launcher

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)

SAMPLE = REPO / "tinytitan" / "assets" / "sample"
CHUNK2 = "train/chunk2/example_train_0.jsonl.zst"


@pytest.fixture
def resumable(uninterrupted, tmp_path) -> Path:
    """A copy of the uninterrupted run that resumes from step N (its step 2N removed)."""
    run = tmp_path / "run ünï"  # a space and non-ASCII characters in the run folder
    shutil.copytree(uninterrupted, run)
    shutil.rmtree(run / "checkpoint" / f"step-{2 * N}")
    return run


def _launch(run: Path, *extra: str, config: Path = DEBUG_CONFIG) -> int:
    overrides = [*small_run_overrides(run, 2 * N, N), *extra]
    env = {**os.environ, "NGPU": "2", "LOG_RANK": "0"}
    return run_guarded(lambda: launcher.launch(str(config), overrides, env))


def _changed_data(tmp_path: Path) -> Path:
    """SlimPajama's sample with chunk2's file replaced by chunk1's (valid, another size)."""
    data = tmp_path / "data ü x"  # a source path with a space and a non-ASCII character
    shutil.copytree(SAMPLE / "SlimPajama-627B", data)
    shutil.copyfile(data / "train/chunk1/example_train_0.jsonl.zst", data / CHUNK2)
    return data


def _other_tokenizer(tmp_path: Path) -> Path:
    """The debug tokenizer less its last merge: the same vocabulary size, other token ids for some text."""
    import json

    tok = tmp_path / "tok ü"
    shutil.copytree(REPO / "tinytitan" / "assets" / "tokenizer", tok)
    doc = json.loads((tok / "tokenizer.json").read_text())
    doc["model"]["merges"] = doc["model"]["merges"][:-1]
    (tok / "tokenizer.json").write_text(json.dumps(doc))
    return tok


RESUMES = [
    (lambda tmp: ["--data.sources.0.path", str(_changed_data(tmp))],
     "data source 'slimpajama': " + CHUNK2 + " changed since step {N} (size 557710 -> 561636 bytes): restore it, or "
     "restart the data stream with --checkpoint.exclude_from_loading dataloader"),
    (lambda tmp: ["--data.seed", "7"],
     "cannot resume from step {N}: data.seed changed since the checkpoint (1234 -> 7); resume with the same [data] "
     "config, or restart the data stream with --checkpoint.exclude_from_loading dataloader"),
    (lambda tmp: ["--model.flavor", "nano"],
     "cannot resume with flavor 'nano': tensor tok_embeddings.weight is [4096, 256] in the run's checkpoint "
     "{run}/checkpoint/step-{N} but flavor 'nano' expects "),
    (lambda tmp: ["--model.hf_assets_path", str(_other_tokenizer(tmp))],
     "the tokenizer {tmp}/tok ü is not the one that trained step {N} (sha256 "),
]  # fmt: skip


@pytest.mark.parametrize("extra, expected", RESUMES, ids=["changed-file", "seed", "flavor", "tokenizer"])
def test_a_resume_that_cannot_continue_is_refused_by_the_launcher_and_writes_nothing(
    resumable, tmp_path, capsys, extra, expected
):
    before = tree_digest(resumable)
    code = _launch(resumable, *extra(tmp_path))
    out, err = capsys.readouterr()
    line = assert_one_line_refusal(err, code)
    assert out == ""
    assert line.startswith("tinytitan: error: " + expected.format(N=N, run=resumable, tmp=tmp_path)), line
    assert tree_digest(resumable) == before  # no [[run.segments]] appended, [training] steps as it was


STAGE_RESUMES = [
    (["--data.stages.0.until_tokens", str((STAGE_STEPS - 2) * 2 * 4 * 256)],
     "data stage 'pretrain': it now ends at step 4, not step 6, a stage the checkpoint of step 8 has already "
     "begun; a begun stage must stay as it ran (the data and the LR it already trained on): restore it in the "
     "config, or resume with --data.allow_stage_change to continue with the changed stages from here"),
    (["weights = { slimpajama = 0.4, starcoderdata = 0.3, pydocs = 0.3 }",
      "weights = { slimpajama = 0.5, starcoderdata = 0.2, pydocs = 0.3 }"],
     "data stage 'cooldown': weights slimpajama 0.400 -> 0.500, starcoderdata 0.300 -> 0.200, a stage the "
     "checkpoint of step 8 has already begun; a begun stage must stay as it ran (the data and the LR it already "
     "trained on): restore it in the config, or resume with --data.allow_stage_change to continue with the "
     "changed stages from here"),
    (["--training.seq_len", "512"],
     "cannot resume from step 8 with training.seq_len 512 (the checkpoint's: 256): stages end at a number of "
     "tokens, so this moves a stage already begun (data stage 'pretrain': it now ends at step 3, not step 6); "
     "resume with --training.seq_len 256, or with --data.allow_stage_change to continue with the moved stages "
     "from here"),
    (["--training.local_batch_size", "8"],
     "cannot resume from step 8 with a global batch of 16 sequences: the checkpoint's data stream ran 8 a step, "
     "and [[data.stages]] switch at steps of that batch (the data would change stage at other steps than the "
     "learning rate); resume with --training.global_batch_size 8, or start a new run from this checkpoint with "
     "--checkpoint.initial_load_path"),
]  # fmt: skip


@pytest.mark.parametrize("extra, expected", STAGE_RESUMES, ids=["moved-end", "weights", "seq-len", "batch"])
def test_a_resume_that_changes_a_begun_stage_is_refused_before_torchrun(stages_run, tmp_path, capsys, extra,
                                                                        expected):  # fmt: skip
    """Resumes from step 8, inside 'cooldown' (after 'pretrain', steps 1-6). Without stages, a changed seq_len
    or batch continues exactly (test_a_two_process_run_resumed_on_one_process_continues_exactly, and
    tests/data/test_sharding.py); with stages, either moves the steps where a begun stage ends."""
    from tests.helpers import STAGES_CONFIG

    run = tmp_path / "stages"
    shutil.copytree(stages_run, run)
    shutil.rmtree(run / "checkpoint" / f"step-{2 * STAGE_STEPS}")  # resume from step 8, inside 'cooldown'
    before = tree_digest(run)
    config = STAGES_CONFIG
    if not extra[0].startswith("--"):  # a line of the config edited: a copy in a folder with a space and a "ü"
        config = tmp_path / "my cönfig" / "stages ü.toml"
        config.parent.mkdir()
        config.write_text(STAGES_CONFIG.read_text().replace(*extra))
        extra = []
    overrides = [*stages_run_overrides(run, Path("unused")), *extra]
    env = {**os.environ, "NGPU": "2", "LOG_RANK": "0"}
    code = run_guarded(lambda: launcher.launch(str(config), overrides, env))
    out, err = capsys.readouterr()
    assert assert_one_line_refusal(err, code) == "tinytitan: error: " + expected
    assert tree_digest(run) == before


def _cut_record_run(uninterrupted: Path, tmp_path: Path) -> Path:
    run = tmp_path / "cut"
    shutil.copytree(uninterrupted / "checkpoint" / f"step-{N}", run / "checkpoint" / f"step-{N}")
    (run / "run.toml").write_bytes((uninterrupted / "run.toml").read_bytes()[:300])
    return run


def _copied_record_run(uninterrupted: Path, tmp_path: Path) -> Path:
    """Another run's step folder (the uninterrupted run's step 2N, as step N) under a copy of its run.toml."""
    run = tmp_path / "copied"
    shutil.copytree(uninterrupted / "checkpoint" / f"step-{2 * N}", run / "checkpoint" / f"step-{N}")
    shutil.copyfile(uninterrupted / "run.toml", run / "run.toml")
    return run


CLI = [
    (["checkpoint", "inspect", "{cut}/checkpoint/step-{N}"],
     "the run record {cut}/run.toml is incomplete or damaged: it lacks job.dump_folder, model.name, model.flavor and "
     "4 more keys (a cut copy or a full disk): restore it, or pass --config TOML, the training config"),
    (["generate", "--checkpoint", "{cut}/checkpoint/step-{N}", "--prompt", "hi"],
     "the run record {cut}/run.toml is incomplete or damaged: it lacks job.dump_folder, model.name, model.flavor and "
     "4 more keys (a cut copy or a full disk): restore it, or pass --config TOML, the training config"),
    (["export", "{run}/checkpoint/step-99", "--out", "{tmp}/out"],
     "checkpoint {run}/checkpoint/step-99 does not exist: pass one of its run's steps ({N}, {N2}), e.g. "
     "{run}/checkpoint/step-{N2}"),
    (["eval", "loss", "--checkpoint", "{run}/checkpoint/step-99"],
     "checkpoint {run}/checkpoint/step-99 does not exist: pass one of its run's steps ({N}, {N2}), e.g. "
     "{run}/checkpoint/step-{N2}"),
    (["generate", "--checkpoint", "{run}/checkpoint/step-99", "--prompt", "hi"],
     "checkpoint {run}/checkpoint/step-99 does not exist: pass one of its run's steps ({N}, {N2}), e.g. "
     "{run}/checkpoint/step-{N2}"),
    (["train", "--job.dump_folder", "/proc/x ü/run"],
     "--job.dump_folder /proc/x ü/run cannot be created in /proc (No such file or directory): choose a folder on a "
     "writable disk"),
    (["checkpoint", "inspect", "{copied}/checkpoint/step-{N}"],
     "the run record {copied}/run.toml was copied from the run in {run} (its job.dump_folder), whose checkpoints "
     "differ: restore this run's own record, or pass --config TOML, the training config"),
    (["train", "--job.dump_folder", "{tmp}/new", "--model.flavor", "nano", "--checkpoint.initial_load_path",
      "{run}/checkpoint/step-{N}"],
     "tensor tok_embeddings.weight is [4096, 256] in checkpoint {run}/checkpoint/step-{N} but flavor 'nano' expects "
     "[128256, 768]; the checkpoint fits flavor 'debug': set [model] flavor = \"debug\" in the config"),
    (["train", "--job.dump_folder", "{tmp}/new", "--checkpoint.initial_load_path", "{tmp}/hf"],
     "[checkpoint] initial_load_path = '{tmp}/hf' is not a checkpoint step folder (no .metadata): point it at a "
     "step-N folder inside the run's checkpoint folder, e.g. outputs/debug/checkpoint/step-20"),
    (["models", "--bogus"], "tinytitan models: unrecognized arguments: --bogus (see `tinytitan models --help`)"),
    (["bench", "--bogus"], "tinytitan bench: unrecognized arguments: --bogus (see `tinytitan bench --help`)"),
    (["download-tokenizer", "--out", "{tmp}/tok"],
     "cannot reach the Hugging Face Hub (127.0.0.1:9: Connection refused) to fetch meta-llama/Meta-Llama-3-8B: check "
     "the network, or give --repo-id a local copy of the repo (or copy the tokenizer folder from a machine that has "
     "it)"),
]  # fmt: skip


@pytest.mark.parametrize("args, expected", CLI, ids=[" ".join(c[0][:2]) for c in CLI])
def test_cli_refusals_are_one_line(uninterrupted, tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    (tmp_path / "hf").mkdir()  # an exported Hugging Face folder stands for any folder without .metadata
    (tmp_path / "hf" / "config.json").write_text("{}")
    names = {"cut": _cut_record_run(uninterrupted, tmp_path), "copied": _copied_record_run(uninterrupted, tmp_path),
             "run": uninterrupted, "tmp": tmp_path, "N": N, "N2": 2 * N}  # fmt: skip
    before = tree_digest(uninterrupted)
    code = cli([a.format(**names) for a in args])
    out, err = capsys.readouterr()
    assert assert_one_line_refusal(err, code) == "tinytitan: error: " + expected.format(**names)
    assert tree_digest(uninterrupted) == before
    assert not any((tmp_path / name).exists() for name in ("out", "tok", "new"))


def test_a_reader_holds_its_step_against_the_purge(tmp_path):
    from tinytitan.launcher.run_folder import RunLock
    from tinytitan.run import hold
    from tinytitan.run.folder import RunFolder

    run = tmp_path / "run"
    steps = [run / "checkpoint" / f"step-{n}" for n in (2, 4, 6)]
    for step in steps:
        step.mkdir(parents=True)
        (step / ".metadata").write_bytes(b"")
    with RunLock(RunFolder.at(run)):  # a training runs there
        assert hold.hold_checkpoint(steps[0])
        assert not hold.remove_unless_held(steps[0]) and steps[0].is_dir()  # left for the next purge
        hold.release_holds()
        assert hold.remove_unless_held(steps[0]) and not steps[0].exists()
        assert hold.missing_checkpoint(steps[0]) == (
            f"checkpoint {steps[0]} does not exist: the training running in {run} removed it "
            "(checkpoint.keep_latest_k keeps only the newest); pass a step it keeps (4, 6)"
        )


def test_a_resume_warns_of_each_partial_checkpoint_it_skips(uninterrupted, tmp_path):
    from tinytitan.config import load_job_config
    from tinytitan.launcher.resume_check import skipped_checkpoints

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    (run / "checkpoint" / f"step-{2 * N}" / ".metadata").unlink()  # a save that did not finish
    job = load_job_config(DEBUG_CONFIG, small_run_overrides(run, 3 * N, N))
    assert skipped_checkpoints(job, N) == [
        f"skipping the partial checkpoint {run}/checkpoint/step-{2 * N} (no .metadata (the save did not finish)); "
        f"resuming from step {N}"
    ]


def test_a_killed_loader_worker_is_one_line_and_survived_like_a_dead_rank(tmp_path):
    """Rank 1 kills its own data loader worker when it fetches step 3's batch, after the step-2 save
    (tests.kill_loader_worker): the rank fails when it next needs a batch the worker did not deliver (step 4
    on a loaded machine, by step 6 at the latest: a batch the worker was putting when it died may be lost);
    the launcher says why in one line, restarts from the newest checkpoint (step-2 or step-4), finishes."""
    import re

    from tests.helpers import launch

    overrides = [*small_run_overrides(tmp_path, steps=6, interval=2), "--training.dataloader.num_workers", "1",
                 "--experimental.custom_import", "tests.kill_loader_worker"]  # fmt: skip
    env = {"MAX_RESTARTS": "1", "TINYTITAN_TEST_KILL_WORKER": f"1:3:{tmp_path / 'killed'}"}
    proc = launch(overrides, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = [line for line in proc.stderr.splitlines() if line.startswith("tinytitan: rank 1 ")]
    assert len(failures) == 1, proc.stderr[-3000:]
    assert re.search(
        r" failed with exit code 1: data loader worker tinytitan-data-1-0 died \(signal SIGKILL\); "
        r"restarting every rank from the step-[24] checkpoint \(restart 1 of 1\)$",
        failures[0],
    ), failures
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert (tmp_path / "checkpoint" / "step-6" / ".metadata").exists()


def _loader_state(step_folder: Path):
    from tinytitan.checkpoint.reader import open_checkpoint
    from tinytitan.data.loader_state import STATE_KEY, LoaderState

    return LoaderState.from_json(open_checkpoint(step_folder, hold=False).read_value(f"dataloader.{STATE_KEY}"))


def test_a_two_process_run_resumed_on_one_process_continues_exactly(uninterrupted, resumable, tmp_path):
    """2 -> 1 processes: the weights load bit for bit (DCP reshards them), and the data stream continues
    where it stopped. With the run's global batch kept (8: 2 microbatches of 4 on one process) and 2 loader
    workers (the run had 2 readers: one per rank), the one process receives the two ranks' batches, so its
    step-2N loader state is the uninterrupted run's, lane for lane, and its losses are the same ones up to
    the order of the gradient sums."""
    import torch

    from tests.helpers import launch, read_metrics, train_losses
    from tinytitan.checkpoint.reader import open_checkpoint

    overrides = [*small_run_overrides(resumable, 2 * N, N), "--training.global_batch_size", "8",
                 "--training.dataloader.num_workers", "2", "--experimental.custom_import",
                 "tests.record_weights"]  # fmt: skip
    config = tmp_path / "my cönfig dir" / "run ü.toml"  # --config in a folder with a space, a non-ASCII name
    config.parent.mkdir()
    shutil.copyfile(DEBUG_CONFIG, config)
    proc = launch(overrides, nproc=1, config=config)
    assert f"Training starts at step {N + 1}" in proc.stdout + proc.stderr
    loaded = torch.load(resumable / "received" / f"weights-step{N + 1}.pt", weights_only=True)
    saved = open_checkpoint(uninterrupted / "checkpoint" / f"step-{N}", hold=False)
    assert sorted(loaded) == sorted(saved.shapes())
    for name, tensor in loaded.items():
        assert torch.equal(tensor, saved.load_tensor(name)), name  # bit for bit
    ours, theirs = (_loader_state(run / "checkpoint" / f"step-{2 * N}") for run in (resumable, uninterrupted))
    assert (ours.layout.dp_world_size, ours.layout.workers) == (1, 2)
    assert ours.windows == theirs.windows == 2 * N * 8
    assert ours.lanes == theirs.lanes  # every lane at the same token: nothing repeated or skipped
    expected, resumed = train_losses(uninterrupted), train_losses(resumable)
    tokens = [{r["step"]: r["n_tokens_seen"] for r in read_metrics(run) if "n_tokens_seen" in r}
              for run in (resumable, uninterrupted)]  # fmt: skip
    assert tokens[0][2 * N] == tokens[1][2 * N] == 2 * N * 8 * 256  # the run's tokens, not one rank's share
    assert resumed[N + 1] == pytest.approx(expected[N + 1], rel=1e-6)
    assert [resumed[s] for s in range(N + 1, 2 * N + 1)] == pytest.approx(
        [expected[s] for s in range(N + 1, 2 * N + 1)], rel=1e-4
    )


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # inside the last tensor: still a readable safetensors file of the right shapes
    path.write_bytes(bytes(data))


def _edit_provenance(path: Path) -> None:
    import json

    doc = json.loads(path.read_text())
    doc["last_loss"] = 1.0
    path.write_text(json.dumps(doc))


PUSH_EDITS = [
    (lambda f: _flip_last_byte(f / "model.safetensors"),
     "{f}/model.safetensors changed since `tinytitan export` wrote and verified it: push uploads only a folder as "
     "export wrote it; export the checkpoint again (push --license/--dataset restate the card)"),
    (lambda f: _edit_provenance(f / "tinytitan.json"),
     "{f}/tinytitan.json changed since `tinytitan export` wrote and verified it: push uploads only a folder as "
     "export wrote it; export the checkpoint again (push --license/--dataset restate the card)"),
    (lambda f: (f / "tokenizer_config.json").unlink(),
     "{f}/tokenizer_config.json was removed since `tinytitan export` wrote and verified it: push uploads only a "
     "folder as export wrote it; export the checkpoint again (push --license/--dataset restate the card)"),
]  # fmt: skip


@pytest.mark.parametrize("edit, expected", PUSH_EDITS, ids=["weights", "tinytitan.json", "removed"])
def test_push_dry_run_refuses_an_export_edited_since(debug_export, tmp_path, capsys, edit, expected):
    folder = tmp_path / "edited ü export"
    shutil.copytree(debug_export, folder)
    edit(folder)
    code = cli(["push", str(folder), "--repo-id", "org/x", "--dry-run"])
    out, err = capsys.readouterr()
    assert assert_one_line_refusal(err, code) == "tinytitan: error: " + expected.format(f=folder)
    assert out == ""


def test_an_export_to_a_path_with_spaces_then_an_edited_card_is_named_by_push(debug_run, uninterrupted, tmp_path,
                                                                                capsys):  # fmt: skip
    import json

    out = tmp_path / " out ü"  # --out with a leading space and a non-ASCII character
    assert cli(["export", str(debug_run / "checkpoint" / "step-20"), "--out", str(out)]) == 0
    assert json.loads((out / "tinytitan.json").read_text())["verification"]["max_abs_diff"] < 1e-4  # verified
    capsys.readouterr()
    with open(out / "README.md", "a") as f:
        f.write("\nTrained for a test.\n")
    (out / "LICENSE").write_text("MIT\n")
    assert cli(["push", str(out), "--repo-id", "org/x", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["note: README.md was edited since the export: it is uploaded as it is now",
                         "note: LICENSE was added since the export: uploaded too"]  # fmt: skip
    code = cli(["push", str(uninterrupted), "--repo-id", "org/x", "--dry-run"])
    assert assert_one_line_refusal(capsys.readouterr().err, code) == (
        f"tinytitan: error: {uninterrupted} is a training run folder (it has run.toml), not an export: export a "
        f"step first, e.g. `tinytitan export {uninterrupted}/checkpoint/step-N --out DIR`, then push DIR"
    )


def test_a_run_record_edited_since_the_launch_is_said_by_what_reads_it(uninterrupted, tmp_path, capsys):
    run = tmp_path / "edited run"
    shutil.copytree(uninterrupted, run)
    record = run / "run.toml"
    record.write_text(record.read_text().replace('description = "', 'description = "edited: ', 1))
    assert cli(["checkpoint", "inspect", str(run / "checkpoint" / f"step-{N}")]) == 0
    assert (
        f"tinytitan: warning: {record} was edited since the launcher wrote it (its sha256 differs from the one kept "
        "in record.sha256): what it says now is what is read"
    ) in capsys.readouterr().err.splitlines()

"""A two-stage recipe trained through the launcher (``stages_run``: the debug stages config, continued from
``debug_run``'s weights): the mixture the model received in each stage, the LR, the stage everywhere it is
shown, continued pretraining, a resume across the boundary after SIGKILL, and a refusal before any start.
(The same in one process, with every refusal: tests/data/test_stages.py.)"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import (
    REPO,
    STAGE_STEPS,
    STAGES_CONFIG,
    launch,
    read_metrics,
    refused_before_start,
    stages_run_overrides,
    train_losses,
)
from tinytitan.errors import TinytitanError

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)

SAMPLE = REPO / "tinytitan" / "assets" / "sample"
WEIGHTS = {
    "pretrain": {"slimpajama": 0.7, "starcoderdata": 0.3, "pydocs": 0.0},
    "cooldown": {"slimpajama": 0.4, "starcoderdata": 0.3, "pydocs": 0.3},
}
SEQ_LEN = 256


def sample_texts() -> dict[str, str]:
    """Every document of each source of the recipe, read here with zstandard and pyarrow (not the loader)."""
    import pyarrow.parquet as pq
    import zstandard

    prose, docs = [], []
    for path in sorted((SAMPLE / "SlimPajama-627B" / "train").glob("chunk*/*.jsonl.zst")):
        with path.open("rb") as f:
            lines = zstandard.ZstdDecompressor().stream_reader(f).read().decode().splitlines()
        for record in map(json.loads, lines):
            kind = record["meta"]["redpajama_set_name"]
            if kind in ("RedPajamaWikipedia", "RedPajamaCommonCrawl"):  # Python's reference documentation
                docs.append(record["text"])
            elif kind == "RedPajamaBook":
                prose.append(record["text"])
    code = pq.read_table(SAMPLE / "starcoderdata" / "python" / "train-00000-of-00001.parquet", columns=["content"])
    return {"slimpajama": "\0".join(prose), "starcoderdata": "\0".join(code.column("content").to_pylist()),
            "pydocs": "\0".join(docs)}  # fmt: skip


def received(run: Path) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """step -> (inputs, labels) of every rank's microbatches, as the model received them (tests.record_batches)."""
    out: dict[int, list] = collections.defaultdict(list)
    for path in sorted((run / "received").glob("*.npz")):
        step = int(path.name.split("-step")[1].split("-")[0])
        with np.load(path) as z:
            out[step].append((z["inputs"], z["labels"]))
    return out


def attribute(row: list[int], texts: dict[str, str], tokenizer) -> str:
    """The source of a row: where the text of its document pieces occurs, longest piece first (edges trimmed:
    a piece may start or end inside a character's bytes); a piece two sources share (the sample's Wikipedia and
    sets quote the same Python code) passes the question to the next piece."""
    pieces, piece = [], []
    for t in row:
        if t in (tokenizer.bos_id, tokenizer.eos_id):
            pieces.append(piece)
            piece = []
        else:
            piece.append(t)
    pieces.append(piece)
    for piece in sorted(pieces, key=len, reverse=True):
        text = tokenizer.decode(piece)[8:-8]
        if len(text) < 40:
            break
        found = [name for name, blob in texts.items() if text in blob]
        assert found, f"a row whose text no source holds: {text[:80]!r}"
        if len(found) == 1:
            return found[0]
    raise AssertionError(f"no piece of the row tells its source: {tokenizer.decode(row)[:80]!r}")


def test_each_stage_trains_on_its_own_mixture(stages_run):
    """Rows the model received, attributed by document: within a window of the weights in each stage; the
    loader's per-stage counters (metrics) agree; the stage shows in the step log, the metrics and the plot."""
    from tinytitan.tokenizer import load_tokenizer

    texts, tokenizer = sample_texts(), load_tokenizer(REPO / "tinytitan" / "assets" / "tokenizer")
    got = {"pretrain": collections.Counter(), "cooldown": collections.Counter()}
    batches = received(stages_run)
    assert sorted(batches) == list(range(1, 2 * STAGE_STEPS + 1))
    for step, parts in batches.items():
        stage = "pretrain" if step <= STAGE_STEPS else "cooldown"
        for inputs, _labels in parts:
            got[stage].update(attribute(row, texts, tokenizer) for row in inputs.tolist())
    shares = {}
    for stage, counts in got.items():
        n = sum(counts.values())
        assert n == STAGE_STEPS * 2 * 4  # 2 ranks x 4 windows a step
        for source, weight in WEIGHTS[stage].items():
            assert abs(counts[source] - weight * n) < 2, (stage, counts)
        shares[stage] = {s: round(counts[s] / n, 3) for s in WEIGHTS[stage]}
    print("realized shares per stage:", shares)

    rows = {r["step"]: r for r in read_metrics(stages_run) if "loss" in r}
    last = rows[2 * STAGE_STEPS]
    for stage, counts in got.items():
        for source in WEIGHTS[stage]:
            assert last[f"data/stage/{stage}/tokens/{source}"] == counts[source] * SEQ_LEN
    assert [rows[s]["data/stage"] for s in sorted(rows)] == [0.0] * STAGE_STEPS + [1.0] * STAGE_STEPS
    assert rows[STAGE_STEPS + 1]["data/stage/cooldown/first_step"] == STAGE_STEPS + 1

    log = (stages_run / "launch.log").read_text()
    assert "tinytitan: stage 1/2 'pretrain': steps 1-6 (12,288 tokens), slimpajama 0.700, starcoderdata 0.300" in log
    assert log.index("tinytitan: stage 2/2 'cooldown': steps 7-12") < log.index("tinytitan: training ")
    assert (
        f"step {STAGE_STEPS}/12  stage pretrain (1/2)" in log
        and f"step {STAGE_STEPS + 1}/12  stage cooldown (2/2)" in log
    )

    # the LR: warmup (2 steps), the peak through the pretrain stage and the cooldown's first step, then decaying
    lr = {s: rows[s]["lr"] for s in rows}
    peak = 3e-3
    assert all(math.isclose(lr[s], peak) for s in range(2, STAGE_STEPS + 2))
    assert all(lr[s] > lr[s + 1] > peak * 0.1 for s in range(STAGE_STEPS + 1, 2 * STAGE_STEPS))


def test_plot_and_inspect_show_the_stages(stages_run, tmp_path):
    from tinytitan.checkpoint.inspect import format_report, inspect_checkpoint
    from tinytitan.cli import main
    from tinytitan.observe.events import read_scalars, stage_starts

    assert stage_starts(read_scalars(stages_run)) == {"pretrain": 1, "cooldown": STAGE_STEPS + 1}
    assert main(["plot", str(stages_run), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 10_000

    info = inspect_checkpoint(stages_run / "checkpoint" / "step-8")
    data = info["data"]
    assert data["stage"] == "cooldown" and data["stage_index"] == 1
    assert sum(data["tokens_per_source"].values()) == 8 * 2 * 4 * SEQ_LEN
    assert sum(data["stage_tokens"]["cooldown"].values()) == 2 * 2 * 4 * SEQ_LEN
    report = format_report(info)
    lines = [line.split(None, 2) for line in report.splitlines()]
    assert ["data", "stage", "cooldown (2 of 2, steps 7 to the end of the run)"] in lines
    assert ["stage", "pretrain", "pydocs 0, slimpajama 8,704, starcoderdata 3,584"] in lines  # sources by name
    assert report.index("stage pretrain") < report.index("stage cooldown ")


def test_continued_pretraining_starts_from_the_source_weights(stages_run, debug_run):
    """Step 1's loss is the source checkpoint's model on step 1's batches (computed here), not a new model's;
    the optimizer, the LR schedule and the data stream start afresh."""
    from torchtitan.models.llama3 import Transformer

    from tinytitan.checkpoint.reader import open_checkpoint
    from tinytitan.models import flavor_args

    source = open_checkpoint(debug_run / "checkpoint" / "step-20")
    model = Transformer(flavor_args("debug"))
    missing, unexpected = model.load_state_dict(dict(source.iter_tensors()), strict=False)
    assert not unexpected and set(missing) <= {"freqs_cis"}
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, labels in received(stages_run)[1]:
            logits = model(torch.from_numpy(inputs))
            total += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), torch.from_numpy(labels).flatten(), reduction="sum"
            ).item()
            count += labels.size
    first = read_metrics(stages_run)[0]
    assert first["step"] == 1 and math.isclose(first["loss"], total / count, rel_tol=1e-4), (
        first["loss"],
        total / count,
    )
    assert first["loss"] < train_losses(debug_run)[1] - 1.0  # not a new model's loss
    assert math.isclose(first["lr"], 3e-3 / 2)  # a fresh schedule: warmup's first step
    log = (stages_run / "launch.log").read_text()
    assert f"Loading the checkpoint from {debug_run / 'checkpoint' / 'step-20'}." in log


def test_killed_in_the_first_stage_resumes_across_the_boundary_bit_for_bit(stages_run, debug_run, tmp_path):
    """SIGKILL of a rank after the step-4 checkpoint: the restart resumes there (the run's own checkpoint, not
    the initial weights), crosses into the cooldown at step 7, and every loss equals the uninterrupted run's."""
    from tests.launcher.test_faults import ranks, start, wait_until

    overrides = stages_run_overrides(tmp_path, debug_run)
    proc = start(overrides, tmp_path / "log.txt", {"MAX_RESTARTS": "1", "CONFIG_FILE": str(STAGES_CONFIG)})
    wait_until(proc, lambda: (tmp_path / "checkpoint" / "step-4" / ".metadata").exists(), "the checkpoint")
    os.kill(ranks(proc.pid)[1], signal.SIGKILL)
    assert proc.wait(timeout=600) == 0
    log = (tmp_path / "log.txt").read_text()
    assert "Training starts at step 5" in log and f"step {STAGE_STEPS + 1}/12  stage cooldown (2/2)" in log
    expected, resumed = train_losses(stages_run), train_losses(tmp_path)
    assert [resumed[s] for s in range(5, 13)] == [expected[s] for s in range(5, 13)]
    stage_of = {r["step"]: r["data/stage"] for r in read_metrics(tmp_path) if "loss" in r}
    assert [stage_of[s] for s in range(5, 13)] == [0.0, 0.0] + [1.0] * STAGE_STEPS
    print("resumed losses, steps 5-12:", [resumed[s] for s in range(5, 13)])


def test_a_stage_past_the_end_of_the_run_is_refused_before_anything_starts(tmp_path):
    dump = tmp_path / "run"
    proc = launch(["--job.dump_folder", str(dump), "--training.steps", "12"], config=STAGES_CONFIG, check=False,
                  timeout=120)  # fmt: skip
    line = refused_before_start(proc, dump)
    assert line.startswith("tinytitan: error: data stage 'pretrain': until_tokens = 1,000,000 ends at step 245")


def test_the_initial_checkpoint_is_checked_at_launch(debug_run, tmp_path):
    from tinytitan.config import load_job_config
    from tinytitan.launcher.preflight import check_initial_load

    def job(path, *extra):
        return load_job_config(STAGES_CONFIG, ["--job.dump_folder", str(tmp_path / "run"),
                                               "--checkpoint.initial_load_path", str(path), *extra])  # fmt: skip

    check_initial_load(job(debug_run / "checkpoint" / "step-20"))
    with pytest.raises(TinytitanError, match=r"initial_load_path = .*step-7' does not exist: point it at a step"):
        check_initial_load(job(debug_run / "checkpoint" / "step-7"))
    with pytest.raises(TinytitanError, match=r"is not a checkpoint step folder \(no .metadata\)"):
        check_initial_load(job(debug_run / "checkpoint"))
    with pytest.raises(TinytitanError, match=r"tensor tok_embeddings.weight is \[4096, 256\] .* flavor 'nano' expects"):
        check_initial_load(job(debug_run / "checkpoint" / "step-20", "--model.flavor", "nano"))
    broken = tmp_path / "step-20"
    broken.mkdir()
    for f in (debug_run / "checkpoint" / "step-20").iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".distcp" else data)
    with pytest.raises(TinytitanError, match=r"step-20' is incomplete: "):
        check_initial_load(job(broken))

"""Recipes over tokens, in one process: the stage config and its refusals, the spans, the LR, the sampler,
and the loader switching mixtures exactly at the boundary, across a resume on another number of readers.
(Through the launcher, with a model: tests/launcher/test_stages.py.)"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from tests.data.fixtures import ID_BASE, assert_lanes_continue, lane_cursors, loader, reference_cursors
from tests.helpers import STAGES_CONFIG
from tinytitan.config import load_job_config
from tinytitan.data.loader_state import STATE_KEY
from tinytitan.data.mixture import Sampler, StagedSampler
from tinytitan.data.stages import lr_decay_ratio, stage_lr_schedule, stage_spans
from tinytitan.errors import TinytitanError
from tinytitan.job_config import validate_job_config

TOML = STAGES_CONFIG.read_text()
BATCH, SEQ = 4, 256  # one reader: 4 windows a step; every window holds a document start


def config_with(tmp_path, *edits: tuple[str, str], overrides=()):
    text = TOML
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "stages.toml"
    path.write_text(text)
    return load_job_config(path, list(overrides))


PRETRAIN_WEIGHTS = "weights = { slimpajama = 0.7, starcoderdata = 0.3 }"
COOLDOWN_WEIGHTS = "weights = { slimpajama = 0.4, starcoderdata = 0.3, pydocs = 0.3 }"


@pytest.mark.parametrize(
    "edits, overrides, message",
    [
        ([(PRETRAIN_WEIGHTS, "weights = { slimpajama = -0.7, starcoderdata = 0.3 }")], [],
         r"^data stage 'pretrain': weight of 'slimpajama' = -0.7; use a finite number >= 0$"),
        ([(PRETRAIN_WEIGHTS, "weights = { slimpajama = inf, starcoderdata = 0.3 }")], [],
         r"^data stage 'pretrain': weight of 'slimpajama' = inf; use a finite number >= 0$"),
        ([(PRETRAIN_WEIGHTS, "weights = { slimpajama = nan, starcoderdata = 0.3 }")], [],
         r"^data stage 'pretrain': weight of 'slimpajama' = nan; use a finite number >= 0$"),
        ([(PRETRAIN_WEIGHTS, "weights = { slimpajama = 0, starcoderdata = 0.0 }")], [],
         r"^data stage 'pretrain': every weight is 0; give at least one source a weight > 0$"),
        ([(COOLDOWN_WEIGHTS, "weights = { slimpajama = 0.4, wiki = 0.3 }")], [],
         r"^data stage 'cooldown': weights name source 'wiki', which no \[\[data.sources\]\] table defines "
         r"\(sources: slimpajama, starcoderdata, pydocs\); fix the name or add the source$"),
        ([('text_field = "content"', 'text_field = "content"\nweight = 0.3')], [],
         r"^data source 'starcoderdata' has a weight, but \[\[data.stages\]\] give the weights: remove weight"),
        ([("until_tokens = 1_000_000", "until_tokens = 1_000_000\nlr = 'decay'"), ('lr = "stable"\n', "")], [],
         r"^data stage 'pretrain': lr = 'decay' on a stage that is not the last; .* put it on the last stage "
         r"\('cooldown'\) or use lr = 'stable'$"),
        ([('name = "cooldown"          # steps 246-300', 'name = "cooldown"\nuntil_tokens = 900_000')], [],
         r"^data stage 'cooldown': until_tokens = 900,000 is not after the previous stage's end \(1,000,000\); "
         r"stage ends must strictly increase$"),
        ([("until_tokens = 1_000_000", "until_tokens = 2_000_000")], [],
         r"^data stage 'pretrain': until_tokens = 2,000,000 ends at step 489 \(4,096 tokens per step\), but the run "
         r"has training.steps = 300, so the stages after it never run: end it before step 300 \(until_tokens <= "
         r"1,224,704\) or train longer$"),
        ([('name = "cooldown"          # steps 246-300', 'name = "cooldown"\nuntil_tokens = 1_100_000')], [],
         r"^data stage 'cooldown': until_tokens = 1,100,000 ends at step 269 \(4,096 tokens per step\), but the run "
         r"has training.steps = 300: the last stage runs to the end of the run; remove its until_tokens, or set "
         r"training.steps = 269$"),
        ([('name = "cooldown"          # steps 246-300', 'name = "cooldown"\nuntil_tokens = 1_000_100')], [],
         r"^data stage 'cooldown': until_tokens = 1,000,100 ends at step 245 \(4,096 tokens per step\), but the stage "
         r"before it ends at step 245: the stage would have no step"),
        ([('name = "cooldown"          # steps 246-300', 'name = "pretrain"')], [],
         r"^data stage name 'pretrain' is used twice; give every stage its own name$"),
        ([('\nlr = "decay"', '\nlr = "cosine"')], [], r"^data stage 'cooldown': lr = 'cosine'; use 'stable', 'decay'"),
        ([('\nlr = "decay"', '\nlr = "decay"\nmix = 2')], [],
         r"^data stage 'cooldown': unknown key\(s\) mix; valid keys are name, until_tokens, weights, lr$"),
        ([], ["--lr_scheduler.decay_ratio", "0.2"],
         r"^\[lr_scheduler\] decay_ratio = 0.2 and the \[\[data.stages\]\] lr settings both place the LR decay"),
        ([], ["--lr_scheduler.warmup_steps", "250"],
         r"^data stage 'cooldown' \(lr = 'decay'\) starts at step 246, inside the warmup \(lr_scheduler.warmup_steps "
         r"= 250\): start the stage after step 250 or shorten the warmup$"),
        ([], ["--checkpoint.initial_load_path", "outputs/debug/checkpoint/step-300", "--checkpoint.no-enable"],
         r"^\[checkpoint\] initial_load_path = 'outputs/debug/checkpoint/step-300' but enable = false"),
        ([], ["--model.attn_mask_type", "block_causal"],
         r"^\[model\] attn_mask_type = 'block_causal' needs attn_type = 'flex'"),
    ],
    ids=["negative", "inf", "nan", "all-zero", "unknown-source", "source-weight", "decay-not-last", "ends-decrease",
         "beyond-run", "last-end-mismatch", "empty-stage", "duplicate-name", "bad-lr", "unknown-key", "decay-twice",
         "decay-in-warmup", "initial-load-disabled", "mask-needs-flex"],
)  # fmt: skip
def test_every_refusal_is_one_line_naming_the_fix(tmp_path, edits, overrides, message):
    with pytest.raises(TinytitanError, match=message) as e:
        validate_job_config(config_with(tmp_path, *edits, overrides=overrides), world_size=2)
    assert "\n" not in str(e.value)


def test_a_stage_ends_at_the_first_step_boundary_at_or_after_its_tokens(tmp_path):
    data = config_with(tmp_path).data
    ends = {}
    for until in (12288, 12289, 14335, 14336):
        data.stages[0].until_tokens = until
        first, second = stage_spans(data, steps=12, tokens_per_step=2048)
        ends[until] = (first.first_step, first.last_step, second.first_step, second.last_step)
    assert ends == {12288: (1, 6, 7, 12), 12289: (1, 7, 8, 12), 14335: (1, 7, 8, 12), 14336: (1, 7, 8, 12)}
    assert second.weights == {"slimpajama": 0.4, "starcoderdata": 0.3, "pydocs": 0.3}
    assert first.weights["pydocs"] == 0.0  # a source the stage does not name


def test_the_lr_follows_the_stages_through_torchtitans_schedule(tmp_path):
    """Warmup, the peak held through stage 1, torchtitan's decay over the cooldown; its own builder, unchanged."""
    from torchtitan.components.lr_scheduler import build_lr_schedulers

    job = config_with(tmp_path, overrides=["--training.steps", "12", "--data.stages.0.until_tokens", "24576",
                                           "--lr_scheduler.warmup_steps", "2"])  # fmt: skip
    assert stage_lr_schedule(job, world_size=2).startswith("lr: warmup over steps 1-2, stable to step 6, then cosine")
    assert job.lr_scheduler.decay_ratio == 0.5
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=job.optimizer.lr)
    schedule = build_lr_schedulers([opt], job.lr_scheduler, job.training.steps)
    lrs = {}
    for step in range(1, 13):
        lrs[step] = schedule.schedulers[0].get_last_lr()[0]  # what step `step` trains with
        opt.step()
        schedule.step()
    peak, floor = job.optimizer.lr, job.optimizer.lr * job.lr_scheduler.min_lr_factor
    assert lrs[1] == peak / 2 and all(lrs[s] == peak for s in range(2, 8))  # step 7, the first of the cooldown
    assert all(lrs[s] > lrs[s + 1] > floor for s in range(7, 12))


def test_the_decay_ratio_gives_torchtitan_the_decay_stages_steps_exactly():
    from tinytitan.data.stages import StageSpan

    for steps in range(2, 400):
        for first in range(2, steps + 1):
            spans = [StageSpan(0, "a", 1, first - 1, {}, ""), StageSpan(1, "b", first, steps, {}, "decay")]
            assert round(steps * lr_decay_ratio(spans, steps)) == steps - first + 1


def test_the_sampler_is_exact_within_every_stage_and_skips_zero_weights():
    weights = [[0.693584, 0.306416, 0.0], [0.5, 0.2, 0.3], [0.0, 0.0, 1.0]]
    sampler = StagedSampler(1234, [0, 10_000, 25_000], weights)
    g = np.arange(0, 40_000)
    src, stage = sampler.sources(g), sampler.stages(g)
    for k, (lo, hi) in enumerate([(0, 10_000), (10_000, 25_000), (25_000, 40_000)]):
        assert (stage[lo:hi] == k).all()
        for n in (97, 1000, hi - lo):  # any prefix of the stage, not only its end
            counts = np.bincount(src[lo : lo + n], minlength=3)
            assert np.abs(counts - np.asarray(weights[k]) * n).max() < 3, (k, n, counts)
    # one stage from window 0 is the single mixture of a run without stages
    plain = Sampler(1234, weights[0][:2]).sources(g)
    assert (StagedSampler(1234, [0], [weights[0][:2]]).sources(g) == plain).all()


# ---------------------------------------------------------------- the loader across a boundary

STEPS_1 = 30  # stage 1: windows 0-119 (one reader, 4 windows a step)


def stage_sources(c) -> list[dict]:
    """slimpajama; starcoderdata's python files; its rust files, a source the first stage does not use."""
    sp = dict(name="slimpajama", path=str(c.slimpajama), files="train/chunk*/*.jsonl.zst",
              exclude={"meta.redpajama_set_name": ["RedPajamaGithub"]})  # fmt: skip
    python = dict(name="python", path=str(c.starcoderdata), files="python/*.parquet", text_field="content")
    rust = dict(name="rust", path=str(c.starcoderdata), files="rust/*.parquet", text_field="content")
    return [sp, python, rust]


def stages(pretrain=None, cooldown=None, **first) -> list[dict]:
    return [
        dict(name="pretrain", until_tokens=STEPS_1 * BATCH * SEQ, weights=pretrain or {"slimpajama": 0.7, "python": 0.3},
             **first),
        dict(name="cooldown", weights=cooldown or {"slimpajama": 0.2, "python": 0.3, "rust": 0.5}),
    ]  # fmt: skip


def staged_loader(c, workers=0, stage_list=None, **data):
    return loader(c, batch=BATCH, seq_len=SEQ, workers=workers, source_list=stage_sources(c),
                  data_overrides={"stages": stage_list or stages(), **data})  # fmt: skip


def row_source(c, row) -> str:
    """The source of a window, from the documents in it (not from the loader)."""
    names = set()
    for x in row:
        if x >= ID_BASE:
            doc = c.docs[x - ID_BASE]
            names.add(
                "rust" if doc.file.startswith("rust/") else "python" if doc.source == "starcoderdata" else doc.source
            )
    assert len(names) == 1, names
    return names.pop()


def take_rows(c, dl, n) -> list[str]:
    it = iter(dl)
    return [row_source(c, row) for _ in range(n) for row in next(it)[0]["input"].tolist()]


def test_two_readers_to_one_across_the_boundary_switch_exactly(corpus):
    """Stage 1 on 2 readers (1 rank x 2 workers), a checkpoint, stage 1's end and stage 2 on 1 reader: each
    stage's windows follow its weights, rust waits untouched for stage 2, and every lane continues where it
    stopped (no document repeated or skipped)."""
    reference = reference_cursors(corpus, 1000, seq_len=SEQ, source_list=stage_sources(corpus),
                                  data_overrides={"stages": stages()})  # fmt: skip
    two = staged_loader(corpus, workers=2)
    rows = take_rows(corpus, two, 20)  # steps 1-20 of stage 1
    state = two.state_dict()
    two.close()
    cursors = lane_cursors(state)
    assert all(cursors[("rust", lane)] == (0, (0, 0, 0, 0)) for lane in range(8))  # untouched until stage 2
    assert assert_lanes_continue(reference, state) >= 8

    one = staged_loader(corpus)
    one.load_state_dict(state)
    rows += take_rows(corpus, one, 70)  # steps 21-90: stage 1 ends at step 30
    assert assert_lanes_continue(reference, one.state_dict()) >= 16
    first, second = rows[: STEPS_1 * BATCH], rows[STEPS_1 * BATCH :]
    for got, weights in ((first, stages()[0]["weights"]), (second, stages()[1]["weights"])):
        counts = collections.Counter(got)
        for source in ("slimpajama", "python", "rust"):
            assert abs(counts[source] - weights.get(source, 0) * len(got)) < 2, (source, counts, len(got))
    # the loader's per-stage counters agree with what was received
    stats = one.stage_stats()
    assert stats["stage"] == 1 and stats["stage/cooldown/first_step"] == STEPS_1 + 1
    for name, got in (("pretrain", first), ("cooldown", second)):
        for source in ("slimpajama", "python", "rust"):
            assert stats[f"stage/{name}/tokens/{source}"] == collections.Counter(got)[source] * SEQ


def test_the_checkpoint_records_the_stages_and_a_begun_stage_may_not_change(corpus, caplog):
    dl = staged_loader(corpus)
    take_rows(corpus, dl, 10)
    state = dl.state_dict()
    doc = json.loads(state[STATE_KEY])
    assert [(s["name"], s["first_window"], s["end_window"], s["first_step"], s["last_step"]) for s in doc["stages"]] == [
        ("pretrain", 0, STEPS_1 * BATCH, 1, STEPS_1), ("cooldown", STEPS_1 * BATCH, None, STEPS_1 + 1, None)]  # fmt: skip
    assert doc["stages"][1]["weights"] == {"slimpajama": 0.2, "python": 0.3, "rust": 0.5}

    changed = stages(pretrain={"slimpajama": 0.5, "python": 0.5})
    with pytest.raises(TinytitanError, match=r"^data stage 'pretrain': weights python 0.300 -> 0.500, slimpajama "
                                             r"0.700 -> 0.500, a stage the checkpoint of step 10 has already begun; "
                                             r".*resume with --data.allow_stage_change"):  # fmt: skip
        staged_loader(corpus, stage_list=changed).load_state_dict(state)
    moved = [dict(s) for s in stages()]
    moved[0]["until_tokens"] = 40 * BATCH * SEQ
    with pytest.raises(TinytitanError, match=r"^data stage 'pretrain': it now ends at step 40, not step 30"):
        staged_loader(corpus, stage_list=moved).load_state_dict(state)

    with caplog.at_level("WARNING", logger="tinytitan.data"):
        allowed = staged_loader(corpus, stage_list=changed, allow_stage_change=True)
        allowed.load_state_dict(state)
        later = staged_loader(corpus, stage_list=stages(cooldown={"slimpajama": 0.5, "rust": 0.5}))
        later.load_state_dict(state)  # the cooldown has not begun: it may change
    lines = [r.getMessage() for r in caplog.records]
    assert sum("continuing with the changed stages (data.allow_stage_change)" in m for m in lines) == 1
    assert sum("before they began: data stage 'cooldown': weights python 0.300 -> 0.000, slimpajama 0.200 -> 0.500"
               in m for m in lines) == 1  # fmt: skip
    rows = take_rows(corpus, later, STEPS_1 + 10)[(STEPS_1 - 10) * BATCH :]
    assert "python" not in rows and "rust" in rows  # the new cooldown, from its first window


def test_a_run_without_stages_may_add_a_cooldown_later(corpus):
    """The mixture a run trained on becomes the first stage (same weights); the cooldown is added before it begins."""
    from tests.data.fixtures import sources

    plain = loader(corpus, batch=BATCH, seq_len=SEQ)  # slimpajama 0.7, starcoderdata 0.3, no stages
    it = iter(plain)
    for _ in range(5):
        next(it)
    assert json.loads(plain.state_dict()[STATE_KEY])["stages"] == []
    srcs = [{k: v for k, v in s.items() if k != "weight"} for s in sources(corpus)]
    recipe = [dict(name="pretrain", until_tokens=STEPS_1 * BATCH * SEQ, weights={"slimpajama": 0.7, "starcoderdata": 0.3}),
              dict(name="cooldown", weights={"starcoderdata": 1.0})]  # fmt: skip
    staged = loader(corpus, batch=BATCH, seq_len=SEQ, source_list=srcs, data_overrides={"stages": recipe})
    staged.load_state_dict(plain.state_dict())
    assert staged.current_stage().name == "pretrain"
    recipe[0]["weights"] = {"slimpajama": 0.5, "starcoderdata": 0.5}
    with pytest.raises(TinytitanError, match=r"^the mixture \(no stages then\): weights slimpajama 0.700 -> 0.500"):
        loader(corpus, batch=BATCH, seq_len=SEQ, source_list=srcs,
               data_overrides={"stages": recipe}).load_state_dict(plain.state_dict())  # fmt: skip

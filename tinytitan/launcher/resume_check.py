"""The checks of a resume that the launcher makes before torchrun starts.

A resume loads the newest complete checkpoint of the run folder. What it may not change was
refused only inside the ranks, after they had loaded the checkpoint (about 20 s and 50 lines of
``[rank…]`` output): the model's flavor, a data source's files, filter or held-out split, the
seed or lanes of the stream, and a stage the stream has already begun. Here the launcher reads
the checkpoint's ``.metadata`` (shapes) and its loader state (one small JSON value, see
``tinytitan.data.loader_state``) and applies the same rules the ranks do
(``check_fingerprint``, ``check_stage_change``), so the refusal is one line before any process.
A run with ``[[data.stages]]`` may not change its global batch on resume (stages switch at windows
of step x global batch, the learning rate at steps), nor a ``seq_len`` that moves a begun stage.

To name the file that changed, each accepted launch keeps the listing of its data files
(relative path, size, mtime) in ``RunFolder.data_files``; a resume whose source fingerprint
differs compares the files now with that listing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tinytitan.errors import TinytitanError
from tinytitan.run.folder import RunFolder

_RESTART = "or restart the data stream with --checkpoint.exclude_from_loading dataloader"


def check_resume(job_config, world_size: int, start_step: int | None) -> None:
    """Raises the first thing a resume from ``start_step`` may not change (nothing for a fresh start)."""
    if not start_step:
        return
    from tinytitan.checkpoint.flavors import check_shapes
    from tinytitan.checkpoint.reader import open_checkpoint
    from tinytitan.models import SPEC_NAME

    run = RunFolder.of(job_config)
    folder = run.step(start_step)
    ckpt = open_checkpoint(folder, check=False, hold=False)
    if job_config.model.name != SPEC_NAME:
        return
    model = job_config.model
    try:
        check_shapes(ckpt.shapes(), model.flavor, f"the run's checkpoint {folder}")
    except TinytitanError as e:
        raise TinytitanError(f"cannot resume with flavor {model.flavor!r}: {e}") from None
    check_tokenizer_unchanged(job_config, run, start_step)
    excluded = set(job_config.checkpoint.exclude_from_loading or [])
    from tinytitan.data.loader_state import STATE_KEY, LoaderState

    key = f"dataloader.{STATE_KEY}"
    if "dataloader" in excluded or key not in ckpt.other_keys:
        return
    saved = LoaderState.from_json(ckpt.read_value(key))
    _check_data(job_config, world_size, saved, start_step, run)


def check_tokenizer_unchanged(job_config, run: RunFolder, step: int) -> None:
    """The tokenizer the record says trained ``step`` (its hash) is the one this launch loads: another one
    turns the same text into other token ids, and the model's embedding means nothing for them."""
    from tinytitan.run.record import read_record

    try:
        segment = read_record(run.record).run.segment_at(step) if run.record.is_file() else None
    except TinytitanError:
        return  # an unreadable record is set aside, with a warning, when the launch writes its own
    if segment is None or not segment.tokenizer_hash:
        return
    from tinytitan.data.encode import Encoder
    from tinytitan.tokenizer import load_tokenizer

    now = Encoder(load_tokenizer(job_config.model.hf_assets_path)).fingerprint()
    if now != segment.tokenizer_hash:
        raise TinytitanError(
            f"the tokenizer {job_config.model.hf_assets_path} is not the one that trained step {step} (sha256 "
            f"{now[:12]}, the run recorded {segment.tokenizer_hash[:12]}): resume with the run's tokenizer "
            "(--model.hf_assets_path), or start a new run from this checkpoint with --checkpoint.initial_load_path"
        )


def _plan(job_config):
    from tinytitan.data.config import data_config
    from tinytitan.data.planner import make_plan
    from tinytitan.tokenizer import load_tokenizer

    return make_plan(data_config(job_config), load_tokenizer(job_config.model.hf_assets_path))


def _check_data(job_config, world_size: int, saved, step: int, run: RunFolder) -> None:
    from tinytitan.data.config import data_config
    from tinytitan.data.loader_state import check_fingerprint, check_stage_change, stage_changes
    from tinytitan.data.stage_tokens import stage_records
    from tinytitan.data.stages import data_parallel_ranks, sequences_per_step, stage_spans

    plan = _plan(job_config)
    now = plan.fingerprint()
    for name, fp in now["sources"].items():
        if name in saved.fingerprint.get("sources", {}) and saved.fingerprint["sources"][name] != fp:
            changed = changed_files(run, plan, name, step)
            if changed:
                raise TinytitanError(f"data source {name!r}: {changed}: restore it, {_RESTART}")
    try:
        check_fingerprint(saved.fingerprint, now)
    except TinytitanError as e:
        raise TinytitanError(f"cannot resume from step {step}: {e}") from None
    data, training = data_config(job_config), job_config.training
    windows_per_step = sequences_per_step(training, data_parallel_ranks(job_config.parallelism, world_size))
    staged = bool(saved.stages or data.stages)
    old = _saved_windows_per_step(saved, step)
    if staged and old is not None and old != windows_per_step:
        raise TinytitanError(
            f"cannot resume from step {step} with a global batch of {windows_per_step} sequences: the checkpoint's "
            f"data stream ran {old} a step, and [[data.stages]] switch at steps of that batch (the data would "
            f"change stage at other steps than the learning rate); resume with --training.global_batch_size {old}, "
            "or start a new run from this checkpoint with --checkpoint.initial_load_path"
        )
    spans = stage_spans(data, training.steps, windows_per_step * training.seq_len)
    records = stage_records(spans, windows_per_step)
    begun = stage_changes(saved, records)[0]
    if staged and begun and saved.layout.seq_len != training.seq_len and not data.allow_stage_change:
        raise TinytitanError(
            f"cannot resume from step {step} with training.seq_len {training.seq_len} (the checkpoint's: "
            f"{saved.layout.seq_len}): stages end at a number of tokens, so this moves a stage already begun "
            f"({begun[0]}); resume with --training.seq_len {saved.layout.seq_len}, or with "
            "--data.allow_stage_change to continue with the moved stages from here"
        )
    check_stage_change(saved, records, step, data.allow_stage_change)


def _saved_windows_per_step(saved, step: int) -> int | None:
    """The global batch the checkpoint's stream ran: from its stages (a stage's end window over its last step),
    else from its windows over the step (None when they do not divide: its stream was restarted on the way)."""
    for stage in saved.stages:
        if stage.last_step:
            return stage.end_window // stage.last_step
    if step and saved.windows and saved.windows % step == 0:
        return saved.windows // step
    return None


# ---------------------------------------------------------------- the data files of the last accepted launch


def listing(plan) -> dict:
    """Every data file of ``plan``: source -> relative path -> [size, mtime in ns (0: not a local file)]."""
    out: dict[str, dict[str, list[int]]] = {}
    for source in plan.sources:
        files = {}
        for f in source.files:
            try:
                mtime = os.stat(Path(source.path) / f.rel).st_mtime_ns if "://" not in source.path else 0
            except OSError:
                mtime = 0
            files[f.rel] = [f.size, mtime]
        out[source.name] = files
    return out


def write_data_listing(job_config, start_step: int) -> None:
    """Keeps the data files this launch trains on (``RunFolder.data_files``), for the next resume's check."""
    from tinytitan.models import SPEC_NAME

    if job_config.model.name != SPEC_NAME or not job_config.data.sources or job_config.data.format != "text":
        return
    run = RunFolder.of(job_config)
    doc = {"start_step": start_step, "sources": listing(_plan(job_config))}
    run.state.mkdir(parents=True, exist_ok=True)
    tmp = run.data_files.with_name(run.data_files.name + ".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True))
    os.replace(tmp, run.data_files)


def changed_files(run: RunFolder, plan, name: str, step: int) -> str | None:
    """``train/a.jsonl.zst changed since step 4 (size 10 -> 12 bytes)`` for source ``name``; None when the
    listing of the last launch is missing or shows no file difference (then the filter or split changed)."""
    try:
        saved = json.loads(run.data_files.read_text())["sources"][name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = listing(plan)[name]
    lines, touched = [], []
    for rel in sorted(set(saved) | set(now)):
        if rel not in now:
            lines.append(f"{rel} was removed since step {step}")
        elif rel not in saved:
            lines.append(f"{rel} was added since step {step}")
        elif saved[rel][0] != now[rel][0]:
            lines.append(f"{rel} changed since step {step} (size {saved[rel][0]} -> {now[rel][0]} bytes)")
        elif saved[rel][1] and now[rel][1] and saved[rel][1] != now[rel][1]:
            touched.append(f"{rel} changed since step {step} (mtime)")
    lines += touched
    if not lines:
        return None
    more = f" (and {len(lines) - 1} more files)" if len(lines) > 1 else ""
    return lines[0] + more


class KeptFiles:
    """The bytes of some run-folder files before a launch wrote them, to put back when the ranks refuse it."""

    def __init__(self, *paths: Path):
        self.before = {p: (p.read_bytes() if p.is_file() else None) for p in paths}

    def restore(self) -> None:
        for path, content in self.before.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                tmp = path.with_name(f".{path.name}.restore")
                tmp.write_bytes(content)
                os.replace(tmp, path)


def skipped_checkpoints(job_config, start_step: int) -> list[str]:
    """One warning per partial ``step-N`` folder newer than the one the run resumes from (a save that did not
    finish, a truncated copy): the ranks pass over it, as the docs promise to say."""
    if not job_config.checkpoint.enable or job_config.checkpoint.load_step >= 0:
        return []
    from tinytitan.checkpoint.completeness import folder_problem, step_folders

    where = f"resuming from step {start_step}" if start_step else "starting from step 0"
    return [
        f"skipping the partial checkpoint {path} ({folder_problem(path)}); {where}"
        for step, path in step_folders(RunFolder.of(job_config).checkpoints)
        if step > start_step
    ]

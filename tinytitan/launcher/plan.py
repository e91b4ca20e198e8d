"""``tinytitan train --check``: every check the launcher runs, then the plan, and nothing else.

The same checks as a launch (``tinytitan.launcher.launch.checked``: the launcher variables, the config's
values, the tokenizer, the data files and readers, lm-eval tasks, GPU features, the checkpoint a
continued run starts from), then what the run would do: processes, steps, tokens, stages, data readers,
where it starts from. No process starts and nothing is written (not even the run folder).
"""

from __future__ import annotations

from pathlib import Path

from tinytitan.launcher.report import shown
from tinytitan.run.folder import RunFolder


def _row(label: str, text: str) -> str:
    return f"  {label:<15} {text}"


def plan_lines(job_config, *, nproc: int, gpus: int, world_size: int) -> list[str]:
    """What a launch of ``job_config`` would do, one row per fact."""
    from tinytitan.data.preflight import data_readers
    from tinytitan.data.stages import data_parallel_ranks, describe_spans, run_spans, sequences_per_step
    from tinytitan.launcher.run_folder import finished_run, resume_step

    training, ckpt, model = job_config.training, job_config.checkpoint, job_config.model
    dp = data_parallel_ranks(job_config.parallelism, world_size)
    per_step = sequences_per_step(training, dp) * training.seq_len
    nodes = world_size // nproc
    where = f"{nproc} GPU(s)" if gpus else f"{nproc} CPU processes (no GPU found)"
    lines = [
        _row("config", shown(job_config.job.config_file)),
        _row("processes", where + (f" x {nodes} nodes" if nodes > 1 else "") + f", {dp} data-parallel rank(s)"),
        _row("model", f"{model.name} {model.flavor}, attention {_attention(model, gpus)}"),
        _row("steps", f"{training.steps:,}, {per_step:,} tokens a step ({sequences_per_step(training, dp)} "
                      f"sequences x seq_len {training.seq_len}): {training.steps * per_step:,} tokens"),
    ]  # fmt: skip
    step = resume_step(job_config)
    if step:
        lines.append(_row("starts from", f"step {step} of this run folder (a resume)"))
    elif ckpt.initial_load_path and ckpt.enable:
        lines.append(_row("initialised", f"from {ckpt.initial_load_path} (weights only: a fresh optimizer, LR "
                                         "schedule and data stream)"))  # fmt: skip
    else:
        lines.append(_row("starts from", "scratch (random weights, seed "
                                         f"{job_config.debug.seed if job_config.debug.seed is not None else 'random'})"))  # fmt: skip
    if job_config.data.sources:
        spans = run_spans(job_config, world_size)
        if job_config.data.stages:
            lines += [_row("stage" if i == 0 else "", line) for i, line in enumerate(describe_spans(spans, per_step))]
        else:
            weights = ", ".join(f"{name} {w:.3f}" for name, w in spans[0].weights.items() if w > 0)
            lines.append(_row("mixture", weights))
        data = job_config.data
        lines.append(_row("data readers", f"{data_readers(job_config, world_size)} (data-parallel ranks x loader "
                                          f"workers) over {data.lanes} lanes per source, format {data.format!r}"))  # fmt: skip
    lines.append(_row("run folder", shown(RunFolder.of(job_config).root)))
    finished = finished_run(job_config)
    if finished:
        lines.append(_row("", finished.removeprefix("tinytitan: ")))
    return lines


def _attention(model, gpus: int) -> str:
    attn, mask = getattr(model, "attn_type", "sdpa"), getattr(model, "attn_mask_type", "causal")
    if attn == "flex" and not gpus:
        return f"{attn}, {mask} (on the CPU: SDPA with the exact {mask} mask; FlexAttention has no CPU backward)"
    return f"{attn}, {mask}"


def print_plan(job_config, *, nproc: int, gpus: int, world_size: int) -> None:
    print(f"tinytitan: {Path(job_config.job.config_file).name} passes every start check; the plan:")
    print("\n".join(plan_lines(job_config, nproc=nproc, gpus=gpus, world_size=world_size)))
    print("tinytitan: nothing was started or written (--check); run the same command without --check to train")

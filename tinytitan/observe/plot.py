"""``tinytitan plot RUN_DIR [RUN_DIR ...] --out curves.png``: a run's curves as one PNG.

Three panels share the x axis (step, or tokens seen): loss (train as a line,
validation as markers, per source where the validator logs it), learning rate,
and tokens/s per device; a fourth, benchmark accuracy (``eval/<task>/<metric>``),
where the run was evaluated (``tinytitan eval tasks --run`` or in-loop ``[eval]``). Several runs are overlaid, one colour each, so runs of
different settings compare at a glance. A run with ``[[data.stages]]`` gets a dotted vertical
line, named, where each stage after the first begins. Steps the ``[guard]`` skipped are marked
with an x at the foot of the loss panel (their loss is left out of the line: a spike would flatten
it), and each rollback with a dashed vertical line at the step it happened, from the run's
``steps.jsonl`` (tinytitan.run.steps). Reads the TensorBoard event files, so it works on a run
that is still going and needs no GPU or browser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinytitan.errors import TinytitanError
from tinytitan.observe.events import (
    LR,
    TOKENS_SEEN,
    TPS,
    TRAIN_LOSS,
    Series,
    eval_tags,
    read_scalars,
    stage_starts,
    validation_loss_tags,
)

DEFAULT_SIZE = (1200, 900)
DPI = 100


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: write WIDTHxHEIGHT in pixels, e.g. 1200x900") from None
    if width < 200 or height < 200:
        raise argparse.ArgumentTypeError(f"--size {text!r}: at least 200x200 pixels")
    return width, height


def run_labels(run_dirs: list[Path]) -> list[str]:
    """The folder names, or the full paths where two runs share a name."""
    names = [p.resolve().name for p in run_dirs]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(run_dirs, names, strict=True)]


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's exponential moving average (0: raw)."""
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def to_x(series: Series, x_axis: str, tokens: dict[int, float]) -> tuple[list[float], list[float]]:
    """Steps, or tokens seen at those steps (validation steps use the nearest logged step before)."""
    if x_axis == "step":
        return [s for s, _ in series], [v for _, v in series]
    logged = sorted(tokens)
    xs, ys = [], []
    for step, value in series:
        before = [s for s in logged if s <= step]
        if before:
            xs.append(tokens[before[-1]])
            ys.append(value)
    return xs, ys


def boundary_x(step: int, x_axis: str, tokens: dict[int, float]) -> float | None:
    """Where a stage starting at ``step`` begins on the x axis: the step, or the tokens seen before it."""
    if x_axis == "step":
        return step - 0.5  # between the last step of one stage and the first of the next
    before = [s for s in sorted(tokens) if s < step]
    return tokens[before[-1]] if before else None


def mark_guard(ax_loss, axes, log, colour, x_axis: str, tokens: dict[int, float]) -> None:
    """Skipped steps (x at the foot of the loss panel) and rollbacks (a dashed line, named)."""
    from tinytitan.run.steps import ROLLED_BACK, SKIPPED

    skipped, _ = to_x([(e.step, 0.0) for e in log.of(SKIPPED)], x_axis, tokens)
    if skipped:
        ax_loss.plot(skipped, [0.02] * len(skipped), "x", color=colour, transform=ax_loss.get_xaxis_transform(),
                     label=f"skipped ({len(skipped)})")  # fmt: skip
    for e in log.of(ROLLED_BACK):
        at, _ = to_x([(e.step, 0.0)], x_axis, tokens)
        if not at:
            continue
        x = at[0]
        for ax in axes:
            ax.axvline(x, color=colour, linestyle="--", linewidth=1)
        ax_loss.annotate(f"rollback \u2192 step-{e.checkpoint_step}", (x, 0.9), xycoords=("data", "axes fraction"),
                         xytext=(3, 0), textcoords="offset points", fontsize="small", color=colour)  # fmt: skip


def draw(runs: dict[str, dict[str, Series]], out: Path, size=DEFAULT_SIZE, x_axis="step", smoothing=0.0,
         guard: dict | None = None) -> Path:  # fmt: skip
    """``guard``: label -> the run's ``StepLog`` (skipped steps and rollbacks to mark), where known."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with_eval = any(eval_tags(scalars) for scalars in runs.values())
    fig, axes = plt.subplots(3 + with_eval, 1, figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, sharex=True)
    ax_loss, ax_lr, ax_tps = axes[:3]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    markers = "osD^v<>"
    for i, (label, scalars) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        tokens = dict(scalars.get(TOKENS_SEEN, []))
        log = (guard or {}).get(label)
        skipped = {e.step for e in log.of("skipped")} if log is not None else set()
        xs, ys = to_x([(st, v) for st, v in scalars.get(TRAIN_LOSS, []) if st not in skipped], x_axis, tokens)
        if xs:
            ax_loss.plot(xs, smooth(ys, smoothing), color=colour, label=f"{label} train")
            drawn += 1
        for j, (name, tag) in enumerate(validation_loss_tags(scalars).items()):
            ax_loss.plot(*to_x(scalars[tag], x_axis, tokens), color=colour, marker=markers[j % len(markers)],
                         linestyle="--", label=f"{label} {name}")  # fmt: skip
        ax_lr.plot(*to_x(scalars.get(LR, []), x_axis, tokens), color=colour, label=label)
        ax_tps.plot(*to_x(scalars.get(TPS, []), x_axis, tokens), color=colour, label=label)
        for j, tag in enumerate(eval_tags(scalars)):
            axes[3].plot(*to_x(scalars[tag], x_axis, tokens), color=colour, marker=markers[j % len(markers)],
                         label=f"{label} {tag[len('eval/'):]}")  # fmt: skip
        if log is not None:
            mark_guard(ax_loss, axes, log, colour, x_axis, tokens)
        for name, first_step in stage_starts(scalars).items():
            x = boundary_x(first_step, x_axis, tokens) if first_step > 1 else None
            if x is None:
                continue
            for ax in axes:
                ax.axvline(x, color=colour, linestyle=":", linewidth=1)
            ax_loss.annotate(f"{name} \u2192", (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                             textcoords="offset points", fontsize="small", color=colour)  # fmt: skip
    if not drawn:
        raise TinytitanError(f"no training loss ({TRAIN_LOSS}) in the event files: nothing to plot")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize="small")
    ax_lr.set_ylabel("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_tps.set_ylabel("tokens/s per device")
    if with_eval:
        axes[3].set_ylabel("benchmark")
        axes[3].legend(fontsize="small")
    axes[-1].set_xlabel("tokens seen" if x_axis == "tokens" else "step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(True, alpha=0.3)
    if len(runs) > 1:
        ax_tps.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)  # no bbox_inches="tight": the PNG keeps the requested size
    plt.close(fig)
    return out


def configure(parser) -> None:
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="dump folder(s) of training runs")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    parser.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, help="WIDTHxHEIGHT in pixels (1200x900)")
    parser.add_argument("--x", choices=("step", "tokens"), default="step", help="x axis: step or tokens seen")
    parser.add_argument("--smooth", type=float, default=0.0, help="EMA weight for the train loss, 0-0.99 (0: raw)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def run(args) -> int:
    if not 0 <= args.smooth < 1:
        raise TinytitanError(f"--smooth {args.smooth}: use a weight in [0, 1), e.g. 0.9")
    if args.out.suffix.lower() != ".png":
        raise TinytitanError(f"--out {args.out} is not a .png file: name the picture e.g. curves.png")
    if args.out.exists() and not args.force:
        raise TinytitanError(f"--out {args.out} exists: pass --force to replace it, or choose another name")
    labels = run_labels(args.run_dirs)
    runs = {label: read_scalars(d) for label, d in zip(labels, args.run_dirs, strict=True)}
    from tinytitan.run.folder import RunFolder
    from tinytitan.run.steps import read_events

    guard = {label: read_events(RunFolder.at(d)) for label, d in zip(labels, args.run_dirs, strict=True)}
    out = draw(runs, args.out, size=args.size, x_axis=args.x, smoothing=args.smooth, guard=guard)
    print(f"wrote {out} ({args.size[0]}x{args.size[1]}, {len(runs)} run(s))")
    return 0

"""Recipes side by side: the same data, the same seeds, held-out loss against tokens (docs/recipes.md).

Each recipe is a config (and optionally its own step count and overrides); every recipe trains once per
seed (``--debug.seed`` and ``--data.seed``) through the launcher, validating every ``--eval-every``
steps. The first recipe is the baseline. Prints a Markdown table: per recipe its steps, tokens, final
held-out loss (mean over seeds, and each seed), the tokens it needed to reach the baseline's final
held-out loss as a ratio of the baseline's tokens (linear between validation points; "not reached"
otherwise), and its median wall time per step. Writes ``results.json``, ``table.md`` and ``loss.png``
(held-out loss against tokens, one colour per recipe, one line per seed) under ``--out``.

    python benchmarks/recipes.py --out outputs/recipes --seeds 1234 7 --nproc 1 \\
        --recipe adamw=train_configs/llama3_debug.toml@300 \\
        --recipe muon=train_configs/llama3_debug_muon.toml@240 \\
        --recipe "muon-lr0.04=train_configs/llama3_debug_muon.toml@240 --optimizer.lr 0.04" \\
        -- --training.seq_len 128     # after --: overrides for every recipe

Runs are sequential; a finished run (its folder has validation at its last step) is reused, so an
interrupted benchmark continues where it stopped. ``--plot-only`` redraws from ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Recipe:
    name: str
    config: str
    steps: int | None = None
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """``name=config[@steps] [--override value ...]``."""
        head, *overrides = shlex.split(text)
        name, _, where = head.partition("=")
        config, _, steps = where.partition("@")
        if not name or not config:
            raise SystemExit(f"recipes.py: --recipe {text!r}: write name=config[@steps] [overrides]")
        return cls(name, config, int(steps) if steps else None, overrides)


def rows(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def curve(folder: Path) -> tuple[list[tuple[int, float]], float, int]:
    """([(tokens, held-out loss)], median seconds per step, last step) of a finished run."""
    found = rows(folder)
    tokens = {r["step"]: r["n_tokens_seen"] for r in found if "n_tokens_seen" in r}
    val = [(tokens.get(r["step"], 0), r["validation/loss"]) for r in found if "validation/loss" in r]
    times = [r["time_metrics/end_to_end(s)"] for r in found if "time_metrics/end_to_end(s)" in r][1:]
    last = max((r["step"] for r in found if "loss" in r), default=0)
    return sorted(val), statistics.median(times) if times else float("nan"), last


def train(recipe: Recipe, seed: int, args, common: list[str]) -> Path:
    folder = Path(args.out) / "runs" / f"{recipe.name}-seed{seed}"
    steps = recipe.steps or args.steps
    val, _, last = curve(folder)
    if last == steps and val:
        return folder  # finished earlier
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    overrides = ["--job.dump_folder", str(folder), "--training.steps", str(steps), "--debug.seed", str(seed),
                 "--data.seed", str(seed), "--validation.enable", "--validation.freq", str(args.eval_every),
                 "--checkpoint.no-enable", "--metrics.log_freq", str(args.log_freq), "--metrics.no-enable_tensorboard",
                 *common, *recipe.overrides]  # fmt: skip
    env = {**os.environ, "NGPU": str(args.nproc), "CONFIG_FILE": str(REPO / recipe.config), "LOG_RANK": "0",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # fmt: skip
    print(f"recipes: {recipe.name} seed {seed}: {steps} steps", file=sys.stderr, flush=True)
    folder.mkdir(parents=True)
    with open(folder.parent / f"{folder.name}.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"recipes.py: {recipe.name} seed {seed} failed ({proc.returncode}): see {log.name}")
    return folder


def tokens_to_reach(points: list[tuple[int, float]], target: float) -> float | None:
    """The first token count where the curve reaches ``target`` (linear between points), or None."""
    for (t0, l0), (t1, l1) in zip([(0, float("inf")), *points], points, strict=False):
        if l1 <= target:
            return t1 if l0 == float("inf") else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def summarize(results: dict) -> list[dict]:
    names = list(results["recipes"])
    base = results["recipes"][names[0]]
    base_tokens = statistics.mean(run["curve"][-1][0] for run in base["runs"].values())
    table = []
    for name in names:
        runs = results["recipes"][name]["runs"]
        finals, ratios = [], []
        for seed, run in runs.items():
            finals.append(run["curve"][-1][1])
            target = base["runs"][seed]["curve"][-1][1]  # the baseline's final loss with the same seed
            reached = tokens_to_reach([tuple(p) for p in run["curve"]], target)
            ratios.append(None if reached is None else reached / base["runs"][seed]["curve"][-1][0])
        steps = results["recipes"][name]["steps"]
        tokens = statistics.mean(run["curve"][-1][0] for run in runs.values())
        table.append({"recipe": name, "steps": steps, "tokens": int(tokens), "heldout_loss": statistics.mean(finals),
                      "heldout_per_seed": finals, "ratio_per_seed": ratios,
                      "ratio": None if None in ratios else statistics.mean(ratios),
                      "tokens_vs_baseline": tokens / base_tokens,
                      "s_per_step": statistics.median(run["s_per_step"] for run in runs.values())})  # fmt: skip
    return table


def markdown(table: list[dict], seeds: list[int]) -> str:
    lines = [f"| recipe | steps | tokens | held-out loss (mean of seeds {', '.join(map(str, seeds))}) | per seed "
             "| tokens to the baseline's final loss (ratio) | s/step |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in table:
        ratio = "not reached" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        per_seed = " / ".join(f"{x:.4f}" for x in r["heldout_per_seed"])
        lines.append(f"| {r['recipe']} | {r['steps']} | {r['tokens']:,} | {r['heldout_loss']:.4f} | {per_seed} "
                     f"| {ratio} | {r['s_per_step']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, recipe) in enumerate(results["recipes"].items()):
        for j, run in enumerate(recipe["runs"].values()):
            tokens, losses = zip(*run["curve"], strict=True)
            ax.plot(tokens, losses, color=f"C{i}", marker="o", ms=3, alpha=0.8, label=name if j == 0 else None)
    base = next(iter(results["recipes"].values()))
    target = statistics.mean(run["curve"][-1][1] for run in base["runs"].values())
    ax.axhline(target, color="grey", ls=":", lw=1, label="baseline's final held-out loss")
    ax.set_xlabel("tokens")
    ax.set_ylabel("held-out loss")
    ax.set_title(results.get("title", "recipes side by side"))
    ax.legend()
    ax.grid(alpha=0.3)
    lo = min(p[1] for r in results["recipes"].values() for run in r["runs"].values() for p in run["curve"])
    ax.set_ylim(lo - 0.1, lo + 1.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    common = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", action="append", default=[], help="name=config[@steps] [overrides]; first: baseline")
    p.add_argument("--seeds", type=int, nargs="+", default=[1234])
    p.add_argument("--steps", type=int, default=300, help="steps of a recipe without @steps")
    p.add_argument("--eval-every", type=int, default=60)
    p.add_argument("--log-freq", type=int, default=10)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--out", default="outputs/recipes")
    p.add_argument("--title", default="")
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        results = json.loads((out / "results.json").read_text())
    else:
        recipes = [Recipe.parse(r) for r in args.recipe] or [Recipe("adamw", "train_configs/llama3_debug.toml")]
        results = {"title": args.title, "seeds": args.seeds, "common_overrides": common, "nproc": args.nproc,
                   "recipes": {}}  # fmt: skip
        for recipe in recipes:
            entry = {"config": recipe.config, "overrides": recipe.overrides, "steps": recipe.steps or args.steps,
                     "runs": {}}  # fmt: skip
            for seed in args.seeds:
                val, s_per_step, _ = curve(train(recipe, seed, args, common))
                entry["runs"][str(seed)] = {"curve": val, "s_per_step": s_per_step}
            results["recipes"][recipe.name] = entry
            (out / "results.json").write_text(json.dumps(results, indent=1))
    table = summarize(results)
    results["table"] = table
    (out / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown(table, results["seeds"])
    (out / "table.md").write_text(text + "\n")
    plot(results, out / "loss.png")
    print(text)
    print(f"\nplot: {out / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

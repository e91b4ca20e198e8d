"""``tinytitan data prepare`` and ``tinytitan data bench``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tinytitan.config import load_job_config
from tinytitan.errors import TinytitanError
from tinytitan.tokenizer import load_tokenizer


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "prepare",
        help="tokenize every source into memory-mapped uint32 token shards",
        description=(
            "Tokenize every [[data.sources]] source of a job config (training and validation files) into "
            "memory-mapped uint32 token shards with a document index and a manifest. Finished files are "
            "kept: an interrupted run picks up where it stopped. Train on them with data.format = 'tokens' "
            "and data.prepared_dir = OUT."
        ),
    )
    p.add_argument("--config", required=True, help="the TOML job config with the [data] section")
    p.add_argument("--out", help="output folder (default: data.prepared_dir of the config)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="config overrides after --, e.g. -- --data.seed 7")

    b = sub.add_parser(
        "bench",
        help="run the configured data loader alone and report tokens/s",
        description=(
            "Run the job config's data loader alone (no model) on one process and report tokens/s, "
            "tokens per source, skipped documents and unreadable files."
        ),
    )
    b.add_argument("--config", required=True, help="the TOML job config with the [data] section")
    b.add_argument("--tokens", type=int, default=2_000_000, help="tokens to read (default 2,000,000)")
    b.add_argument("--dp-world-size", type=int, default=1, help="play this many dp ranks (default 1)")
    b.add_argument("--dp-rank", type=int, default=0, help="... as this rank (default 0)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="config overrides after --, e.g. -- --data.format tokens"
    )


def _overrides(args) -> list[str]:
    extra = list(args.overrides or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    return extra


def _prepare(args) -> int:
    from tinytitan.data.prepare import prepare
    from tinytitan.data.shards import summary

    cfg = load_job_config(args.config, _overrides(args))
    out = args.out or cfg.data.prepared_dir
    manifest = prepare(
        cfg.data,
        load_tokenizer(cfg.model.hf_assets_path),
        out,
        workers=max(1, args.workers),
        progress=not args.no_progress,
    )
    print(summary(manifest))
    print(f"wrote {os.path.join(out, 'manifest.json')}; train with data.format = 'tokens', data.prepared_dir = '{out}'")
    return 0


def bench(job_config, tokens: int, *, dp_world_size: int = 1, dp_rank: int = 0, tokenizer=None) -> dict:
    """Reads `tokens` tokens through the configured loader; returns the measurements."""
    from tinytitan.data.build import build_dataloader
    from tinytitan.data.preflight import check_data

    check_data(job_config)
    if tokenizer is None and job_config.data.format == "text":
        tokenizer = load_tokenizer(job_config.model.hf_assets_path)
    t0 = time.perf_counter()
    dl = build_dataloader(dp_world_size=dp_world_size, dp_rank=dp_rank, tokenizer=tokenizer, job_config=job_config)
    it = iter(dl)
    per_batch = job_config.training.local_batch_size * job_config.training.seq_len
    next(it)  # start-up (workers, first files) is reported separately
    t1 = time.perf_counter()
    n = per_batch
    start_stats = dl.stats()
    while n < tokens:
        next(it)
        n += per_batch
    t2 = time.perf_counter()
    stats = dl.stats()
    dl.close()
    sources = [s.name for s in job_config.data.sources]
    measured = n - per_batch
    return {
        "format": job_config.data.format,
        "tokens": n,
        "seconds": t2 - t1,
        "startup_seconds": t1 - t0,
        "tokens_per_s": measured / max(t2 - t1, 1e-9),
        "tokens_per_source": {s: int(stats[f"tokens/{s}"]) for s in sources},
        "share_per_source": {
            s: stats[f"tokens/{s}"] / max(1.0, sum(stats[f"tokens/{x}"] for x in sources)) for s in sources
        },
        "docs_skipped": {s: int(stats[f"docs_skipped/{s}"]) for s in sources},
        "docs_excluded": {s: int(stats[f"docs_excluded/{s}"]) for s in sources},
        "passes": {s: stats[f"passes/{s}"] for s in sources},
        "files_skipped": dl.skipped_files(),
        "batch_size": job_config.training.local_batch_size,
        "seq_len": job_config.training.seq_len,
        "num_workers": dl.num_workers,
        "warmup_tokens": int(sum(start_stats[f"tokens/{s}"] for s in sources)),
    }


def _bench(args) -> int:
    if args.tokens < 1 or args.dp_world_size < 1:
        raise TinytitanError(f"--tokens {args.tokens} and --dp-world-size {args.dp_world_size} must be at least 1")
    if not 0 <= args.dp_rank < args.dp_world_size:
        raise TinytitanError(f"--dp-rank {args.dp_rank} must be in [0, --dp-world-size {args.dp_world_size})")
    cfg = load_job_config(args.config, _overrides(args))
    result = bench(cfg, args.tokens, dp_world_size=args.dp_world_size, dp_rank=args.dp_rank)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['tokens']:,} tokens in {result['seconds']:.2f}s: {result['tokens_per_s']:,.0f} tokens/s "
        f"({result['format']} format, batch {result['batch_size']} x {result['seq_len']}, "
        f"{result['num_workers']} workers; start-up {result['startup_seconds']:.2f}s)"
    )
    for name, n in result["tokens_per_source"].items():
        print(
            f"  {name}: {n:,} tokens ({result['share_per_source'][name]:.2%}), "
            f"{result['docs_skipped'][name]} empty and {result['docs_excluded'][name]} excluded documents, "
            f"{result['passes'][name]:.2f} passes"
        )
    files = result["files_skipped"]
    print(f"  unreadable files skipped: {len(files)}" + "".join(f"\n    {f}" for f in files))
    return 0


def run(args) -> int:
    if args.data_command == "prepare":
        return _prepare(args)
    if args.data_command == "bench":
        return _bench(args)
    raise TinytitanError(f"unknown data action {args.data_command!r}; use prepare or bench")


if __name__ == "__main__":  # python -m tinytitan.data.cli ... (same as `tinytitan data ...`)
    from tinytitan.errors import run_guarded

    _parser = argparse.ArgumentParser(prog="tinytitan data")
    configure(_parser)
    _args = _parser.parse_args()
    sys.exit(run_guarded(lambda: run(_args)))

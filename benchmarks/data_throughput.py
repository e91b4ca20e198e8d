"""Data loader throughput against raw one-thread tokenization, on the same texts.

For each tokenizer (the embedded 4,096-token one, and the real 128,256-token Llama 3 one
converted from llama-models' ``tokenizer.model`` or given with --llama3) and each mix:

* long-prose mix: SlimPajama documents 0.75 + whole Starcoderdata files 0.25 (by tokens);
* short-code mix: SlimPajama documents 0.75 + Starcoderdata cut into short snippets 0.25
  (<= --snippet characters at line boundaries, like the many small files of the real set);

it builds a corpus in the real layouts (.jsonl.zst chunks, parquet row groups) and measures,
in one process with RAYON_NUM_THREADS=1 (alternating, --rounds times):

1. raw ``Tokenizer.encode_batch`` (the ``_fast`` variant the loader uses) of every document
   in ~1 MB batches: the ceiling of the streaming path;
2. the streaming loader (format = "text"): read, decompress, parse, filter, tokenize, mix, pack;
3. ``data prepare`` with one worker (in this process), and the prepared-shard loader;

and prints the four ratios streaming / raw (tokens per CPU-second; target >= 0.8), prepare's
tokens/s per worker against the same raw figure, and the shard loader's tokens/s.

    python benchmarks/data_throughput.py                   # 4 MB per corpus, a few minutes on 2 cores
    python benchmarks/data_throughput.py --profile short   # cProfile of the streaming loader, short-code mix
    python benchmarks/data_throughput.py --json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIXES = ("long", "short")
PROSE_WEIGHT, CODE_WEIGHT = 0.75, 0.25


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=4.0, help="MB of text per corpus (default 4)")
    p.add_argument("--files", type=int, default=16, help="SlimPajama files (and parquet row groups) to write")
    p.add_argument("--sample", default=str(REPO / "tinytitan/assets/sample"), help="where to take documents from")
    p.add_argument("--llama3", default=None, help="Llama 3 tokenizer folder (default: convert llama-models' file)")
    p.add_argument("--snippet", type=int, default=400, help="longest code snippet of the short-code mix (chars)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens to read from prepared shards")
    p.add_argument("--rounds", type=int, default=3, help="alternate raw/streaming this often (median ratio)")
    p.add_argument("--only", choices=("embedded", "llama3"), default=None, help="one tokenizer only")
    p.add_argument("--profile", choices=MIXES, default=None, help="cProfile the streaming loader on this mix")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def _sample_docs(sample: Path) -> tuple[list[dict], list[dict]]:
    import pyarrow.parquet as pq
    import zstandard

    sp = []
    for f in sorted(sample.glob("SlimPajama-627B/train/*/*.jsonl.zst")):
        data = zstandard.ZstdDecompressor().stream_reader(f.open("rb")).read()
        sp += [json.loads(line) for line in data.splitlines() if line.strip()]
    sc = []
    for f in sorted(sample.glob("starcoderdata/*/*.parquet")):
        sc += pq.read_table(f).to_pylist()
    if not sp or not sc:
        raise SystemExit(f"no sample documents under {sample}")
    return sp, sc


def _snippets(docs: list[dict], limit: int) -> list[dict]:
    """Code files cut at line boundaries into pieces of at most ``limit`` characters."""
    out = []
    for d in docs:
        piece = ""
        for line in d["content"].splitlines(keepends=True):
            if piece and len(piece) + len(line) > limit:
                out.append({**d, "content": piece})
                piece = ""
            piece += line
        if piece.strip():
            out.append({**d, "content": piece})
    return out


def build_corpus(root: Path, mb: float, n_files: int, sample: Path, snippet: int | None) -> dict:
    """SlimPajama + Starcoderdata layouts with ~mb MB of text, 75/25 by bytes (code cut short if ``snippet``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    sp_docs, sc_docs = _sample_docs(sample)
    if snippet:
        sc_docs = _snippets(sc_docs, snippet)
    target = {"sp": mb * PROSE_WEIGHT * 1e6, "sc": mb * CODE_WEIGHT * 1e6}
    texts: list[str] = []

    def take(docs, key, budget):
        out, size, i = [], 0, 0
        while size < budget:
            d = dict(docs[i % len(docs)])
            if i >= len(docs):  # repeated document: keep it distinct
                d[key] = f"{d[key]}\n{i}"
            out.append(d)
            size += len(d[key])
            i += 1
        return out

    sp = take(sp_docs, "text", target["sp"])
    sc = take(sc_docs, "content", target["sc"])
    per = -(-len(sp) // n_files)
    for k in range(n_files):
        rows = sp[k * per : (k + 1) * per]
        path = root / "SlimPajama-627B" / "train" / f"chunk{k % 4 + 1}" / f"example_train_{k // 4}.jsonl.zst"
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = "".join(json.dumps(r) + "\n" for r in rows).encode()
        path.write_bytes(zstandard.ZstdCompressor(level=3).compress(raw))
        texts += [r["text"] for r in rows]
    n_parquet = max(1, n_files // 4)
    per = -(-len(sc) // n_parquet)
    for k in range(n_parquet):
        rows = sc[k * per : (k + 1) * per]
        path = root / "starcoderdata" / "python" / f"train-{k:05d}-of-{n_parquet:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=max(1, -(-len(rows) // 4)))
        texts += [r["content"] for r in rows]
    return {"texts": texts, "bytes": sum(len(t) for t in texts), "docs": len(texts), "files": n_files + n_parquet}


def job_config(root: Path, tokenizer: str, seq_len: int, batch: int, lanes: int, fmt: str = "text"):
    from tinytitan.data.config import Data

    data = Data(
        seed=1234,
        format=fmt,
        prepared_dir=str(root / "prepared"),
        lanes=lanes,
        sources=[
            dict(name="slimpajama", path=str(root / "SlimPajama-627B"), files="train/chunk*/*.jsonl.zst",
                 weight=PROSE_WEIGHT),
            dict(name="starcoderdata", path=str(root / "starcoderdata"), files="*/train-*.parquet",
                 text_field="content", weight=CODE_WEIGHT),
        ],
    )  # fmt: skip
    from tinytitan.config import load_job_config

    cfg = load_job_config(None, [])  # the debug config, with this corpus, tokenizer and shapes
    cfg.data = data
    cfg.model.hf_assets_path = tokenizer
    cfg.training.local_batch_size, cfg.training.seq_len = batch, seq_len
    cfg.training.dataloader.num_workers = 0
    return cfg


def raw_encode(tok, texts: list[str]) -> dict:
    raw = tok.tokenizer
    fast = getattr(raw, "encode_batch_fast", raw.encode_batch)
    batch, size, n = [], 0, 0
    c0, t0 = time.process_time(), time.perf_counter()
    for t in texts:
        batch.append(t)
        size += len(t)
        if size >= 1 << 20:
            n += sum(len(e.ids) + 2 for e in fast(batch, add_special_tokens=False))
            batch, size = [], 0
    if batch:
        n += sum(len(e.ids) + 2 for e in fast(batch, add_special_tokens=False))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tokens": n, "seconds": dt, "tokens_per_s": n / dt, "tokens_per_cpu_s": n / cpu}


def run_loader(jc, tok, tokens: int, profile: cProfile.Profile | None = None) -> dict:
    from tinytitan.data.build import build_dataloader

    dl = build_dataloader(dp_world_size=1, dp_rank=0, tokenizer=tok, job_config=jc)
    it = iter(dl)
    per = jc.training.local_batch_size * jc.training.seq_len
    next(it)
    n = per
    c0, t0 = time.process_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    while n < tokens:
        next(it)
        n += per
    if profile is not None:
        profile.disable()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    dl.close()
    n -= per  # the first batch (start-up) is not timed
    return {"tokens": n, "seconds": dt, "tokens_per_s": n / dt, "tokens_per_cpu_s": n / cpu}


def run_prepare(jc, tok, out: str) -> dict:
    from tinytitan.data.prepare import prepare

    c0 = time.process_time()
    prepare(jc.data, tok, out, workers=1, progress=False)  # one worker: in this process
    cpu = time.process_time() - c0
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    tokens = sum(int(s.get("tokens", 0)) for s in manifest["sources"].values())
    return {"tokens": tokens, "tokens_per_cpu_s": tokens / cpu}


def llama3_folder(given: str | None, root: Path) -> str:
    if given:
        return given
    from importlib.resources import files

    from tinytitan.tokenizer_convert import convert_tokenizer

    model = Path(str(files("llama_models") / "llama3" / "tokenizer.model"))
    out = root / "llama3-tokenizer"
    convert_tokenizer(model, out, log=lambda _: None)
    return str(out)


def measure(name: str, folder: str, mix: str, args, root: Path) -> dict:
    from tinytitan.tokenizer import load_tokenizer

    tok = load_tokenizer(folder)
    where = root / f"{name}-{mix}"
    corpus = build_corpus(where, args.mb, args.files, Path(args.sample), args.snippet if mix == "short" else None)
    jc = job_config(where, folder, args.seq_len, args.batch, lanes=args.files)
    raws, streams = [], []
    profile = cProfile.Profile() if args.profile == mix else None
    for _ in range(max(1, args.rounds)):  # alternated: on a shared machine both see the same conditions
        raws.append(raw_encode(tok, corpus["texts"]))
        streams.append(run_loader(jc, tok, int(raws[-1]["tokens"] * 0.9), profile))
    ratios = [s["tokens_per_cpu_s"] / r["tokens_per_cpu_s"] for r, s in zip(raws, streams, strict=True)]
    raw = max(raws, key=lambda r: r["tokens_per_cpu_s"])
    prep = run_prepare(jc, tok, jc.data.prepared_dir)
    shards = run_loader(
        job_config(where, folder, args.seq_len, args.batch, args.files, "tokens"), tok, args.shard_tokens
    )
    if profile is not None:
        print(f"--- cProfile: streaming loader, {name} tokenizer, {mix} mix (cumulative, top 25)", file=sys.stderr)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return {
        "tokenizer": name,
        "mix": mix,
        "docs": corpus["docs"],
        "bytes": corpus["bytes"],
        "tokens": raw["tokens"],
        "raw_tokens_per_cpu_s": raw["tokens_per_cpu_s"],
        "streaming_tokens_per_cpu_s": max(s["tokens_per_cpu_s"] for s in streams),
        "streaming_vs_raw": statistics.median(ratios),
        "streaming_vs_raw_per_round": ratios,
        "prepare_tokens_per_cpu_s_per_worker": prep["tokens_per_cpu_s"],
        "prepare_vs_raw": prep["tokens_per_cpu_s"] / raw["tokens_per_cpu_s"],
        "shards_tokens_per_cpu_s": shards["tokens_per_cpu_s"],
    }


def main(argv=None) -> int:
    args = _args(argv)
    os.environ["RAYON_NUM_THREADS"] = "1"  # one tokenizer thread, before tokenizers starts its pool
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="tinytitan-bench-") as tmp:
        root = Path(tmp)
        tokenizers = {"embedded": str(REPO / "tinytitan/assets/tokenizer")}
        if args.only != "embedded":
            tokenizers["llama3"] = llama3_folder(args.llama3, root)
        if args.only == "llama3":
            del tokenizers["embedded"]
        results = [measure(n, f, mix, args, root) for n, f in tokenizers.items() for mix in MIXES]
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"tokens per CPU-second, one process, RAYON_NUM_THREADS=1; {args.mb} MB per corpus, "
          f"windows {args.batch} x {args.seq_len}; median of {args.rounds} alternated rounds")  # fmt: skip
    print(f"{'tokenizer':9} {'mix':6} {'docs':>6} {'raw encode_batch':>17} {'streaming':>11} {'ratio':>6}  "
          f"{'prepare/worker':>14} {'ratio':>6} {'shards':>13}")  # fmt: skip
    for r in results:
        flag = "" if r["streaming_vs_raw"] >= 0.8 else "  < 0.8 target"
        print(
            f"{r['tokenizer']:9} {r['mix']:6} {r['docs']:>6} {r['raw_tokens_per_cpu_s']:>17,.0f} "
            f"{r['streaming_tokens_per_cpu_s']:>11,.0f} {r['streaming_vs_raw']:>5.2f}x  "
            f"{r['prepare_tokens_per_cpu_s_per_worker']:>14,.0f} {r['prepare_vs_raw']:>5.2f}x "
            f"{r['shards_tokens_per_cpu_s']:>13,.0f}{flag}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

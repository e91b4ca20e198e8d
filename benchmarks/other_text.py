"""A second corpus, from text the recipes were not tuned on, laid out like the embedded sample (docs/recipes.md).

The embedded sample (``tinytitan/assets/sample``) is the King James Bible, CPython's ``pydoc`` topics and
CPython's standard library. This script builds a corpus of the same shape from other real text that is
already on the machine, the installed packages of the Python environment it runs in (pinned versions, so
the same venv gives byte-identical files):

* prose ("SlimPajama-627B"): the long descriptions of every ``*.dist-info/METADATA`` (the body after the
  headers: READMEs in Markdown or reStructuredText) and every ``.md`` / ``.rst`` file of the packages,
  deduplicated, cut into documents of at most ``--doc-chars`` at blank lines. About ``--holdout`` of the
  source files (all documents of a file together, chosen by hash) go to ``validation/``, the rest to two
  training chunks;
* code ("starcoderdata"): ``.py`` files of ``--code-packages`` (torch and numpy by default; no CPython
  standard library), tests and files outside 300..60000 bytes excluded, a hash-ordered subset up to
  ``--code-bytes``, rows kept in hash order (the configs hold out the first 16 rows: a spread sample).

    python benchmarks/other_text.py --out outputs/other_text
    # then train on it: the sources' paths are scalar keys
    tinytitan train --config debug --data.sources.0.path outputs/other_text/SlimPajama-627B \\
        --data.sources.1.path outputs/other_text/starcoderdata

The folder gets a ``README.md`` with the counts and the distributions (name and version) the text came
from. Not committed: only this script is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import sysconfig
from pathlib import Path

SKIP_DIRS = {"tests", "test", "testing", "_vendor", "vendor", "__pycache__"}


def key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def metadata_body(path: Path) -> str:
    """The long description: what follows the first blank line of a METADATA file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    _, sep, body = text.partition("\n\n")
    return body.strip() if sep else ""


def pieces(text: str, limit: int) -> list[str]:
    """Cut at blank lines into documents of at most ``limit`` characters (a longer paragraph stays whole)."""
    out, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = para.strip("\n")
        if not para.strip():
            continue
        if cur and len(cur) + len(para) + 2 > limit:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
    if cur:
        out.append(cur)
    return [p for p in out if len(p) >= 200]


def prose_files(site: Path) -> list[tuple[str, str, str]]:
    """(relative path, set label, text) of every METADATA body and .md/.rst file, deduplicated, sorted by path."""
    found = []
    for path in sorted(site.glob("*.dist-info/METADATA")):
        found.append((str(path.relative_to(site)), "RedPajamaCommonCrawl", metadata_body(path)))
    for path in sorted(p for ext in ("*.md", "*.rst") for p in site.rglob(ext)):
        rel = path.relative_to(site)
        if ".dist-info" in str(rel) or SKIP_DIRS & set(rel.parts):
            continue
        found.append((str(rel), "RedPajamaWikipedia", path.read_text(encoding="utf-8", errors="replace").strip()))
    seen, unique = set(), []
    for rel, label, text in found:
        if len(text) >= 200 and key(text) not in seen:
            seen.add(key(text))
            unique.append((rel, label, text))
    return unique


def code_files(site: Path, packages: list[str], lo: int, hi: int, budget: int) -> list[tuple[str, str]]:
    """(relative path, source) of a hash-ordered subset of the packages' .py files, in hash order."""
    cands = []
    for pkg in packages:
        for path in sorted((site / pkg).rglob("*.py")):
            rel = path.relative_to(site)
            if SKIP_DIRS & set(rel.parts) or path.name.startswith("test_") or not lo <= path.stat().st_size <= hi:
                continue
            cands.append((key(str(rel)), str(rel), path))
    rows, used, seen = [], 0, set()
    for _, rel, path in sorted(cands):
        text = path.read_text(encoding="utf-8", errors="replace")
        if key(text) in seen or used + len(text) > budget:
            continue
        seen.add(key(text))
        rows.append((rel, text))
        used += len(text)
    return rows


def write_jsonl_zst(path: Path, docs: list[tuple[str, str]]) -> None:
    import zstandard

    raw = "".join(json.dumps({"text": t, "meta": {"redpajama_set_name": s}}, ensure_ascii=False) + "\n"
                  for s, t in docs)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstandard.ZstdCompressor(level=19, threads=0).compress(raw.encode("utf-8")))


def write_parquet(path: Path, rows: list[tuple[str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"max_stars_repo_path": [r for r, _ in rows], "max_stars_repo_name": ["site-packages"] * len(rows),
                      "max_stars_count": pa.array([0] * len(rows), pa.int64()), "id": [str(i) for i in range(len(rows))],
                      "content": [t for _, t in rows]})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", compression_level=19)


def distributions(site: Path) -> list[str]:
    out = []
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        head = meta.read_text(encoding="utf-8", errors="replace").partition("\n\n")[0]
        fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line and not line.startswith(" "))
        out.append(f"{fields.get('Name', meta.parent.name)}=={fields.get('Version', '?')}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/other_text")
    p.add_argument("--site-packages", default=sysconfig.get_paths()["purelib"])
    p.add_argument("--doc-chars", type=int, default=6000, help="longest prose document (cut at blank lines)")
    p.add_argument("--holdout", type=float, default=0.06, help="share of prose source files held out")
    p.add_argument("--code-packages", nargs="+", default=["torch", "numpy"])
    p.add_argument("--code-bytes", type=int, default=1_700_000, help="budget of source bytes (the sample's)")
    args = p.parse_args(argv)
    site, out = Path(args.site_packages), Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"other_text.py: {out} is not empty; remove it or pick another --out")

    files = prose_files(site)
    train, valid = [], []
    for rel, label, text in files:  # held out by file, by the hash of its path: stable and spread out
        held = int(key(rel)[:8], 16) / 0xFFFFFFFF < args.holdout
        (valid if held else train).extend((label, piece) for piece in pieces(text, args.doc_chars))
    train.sort(key=lambda d: key(d[1]))  # records in a fixed pseudo-random order, as in the sample
    valid.sort(key=lambda d: key(d[1]))
    half = len(train) // 2
    sp = out / "SlimPajama-627B"
    write_jsonl_zst(sp / "train/chunk1/example_train_0.jsonl.zst", train[:half])
    write_jsonl_zst(sp / "train/chunk2/example_train_0.jsonl.zst", train[half:])
    write_jsonl_zst(sp / "validation/chunk1/example_holdout_0.jsonl.zst", valid)
    rows = code_files(site, args.code_packages, 300, 60000, args.code_bytes)
    write_parquet(out / "starcoderdata/python/train-00000-of-00001.parquet", rows)

    chars = lambda docs: sum(len(t) for _, t in docs)  # noqa: E731
    summary = (f"prose: {len(files)} source files; train {len(train)} docs ({chars(train):,} chars), "
               f"validation {len(valid)} docs ({chars(valid):,} chars)\n"
               f"code: {len(rows)} files of {', '.join(args.code_packages)} ({sum(len(t) for _, t in rows):,} chars)")  # fmt: skip
    (out / "README.md").write_text(
        f"# Other text (benchmarks/other_text.py)\n\nBuilt from {site} with Python {sys.version.split()[0]}.\n\n"
        f"{summary}\n\n## Distributions\n\n" + "\n".join(distributions(site)) + "\n"
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

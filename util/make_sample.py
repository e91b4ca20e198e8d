#!/usr/bin/env python3
"""Build the small embedded sample corpus shipped in ``tinytitan/assets/sample``.

The sample mimics the on-disk layout of two Hugging Face pretraining datasets
so that the real data loaders can be exercised offline:

* ``SlimPajama-627B/{train/chunk1,train/chunk2,validation/chunk1}/*.jsonl.zst``
  -- zstd-compressed JSON lines ``{"text": ..., "meta": {"redpajama_set_name": ...}}``
* ``starcoderdata/python/train-00000-of-00001.parquet``
  -- columns ``max_stars_repo_path, max_stars_repo_name, max_stars_count, id, content``

Sources (both freely redistributable, see the generated README.md):

* King James Bible text from the Debian package ``bible-kjv-text`` (public domain),
  read with the ``bible`` program from the Debian package ``bible-kjv``; one
  chapter per ``RedPajamaBook`` document.
* Python standard library of this interpreter (PSF License): the
  ``pydoc_data/topics.py`` reference-manual topics become English prose labelled
  ``RedPajamaWikipedia`` / ``RedPajamaCommonCrawl``; a few small modules become
  ``RedPajamaGithub`` documents; a larger disjoint subset of ``.py`` files fills
  the starcoderdata parquet file.

The output is deterministic: the same inputs give byte-identical files.

Usage::

    python util/make_sample.py                      # writes tinytitan/assets/sample
    python util/make_sample.py --out /tmp/sample    # somewhere else
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tinytitan" / "assets" / "sample"
DEFAULT_BIBLE_DATA = Path("/usr/lib/bible.data")
APT_HINT = "apt-get update && apt-get install -y bible-kjv-text bible-kjv"

SLIMPAJAMA = "SlimPajama-627B"
STARCODER = "starcoderdata"
STARCODER_FILE = Path("python") / "train-00000-of-00001.parquet"
TRAIN_CHUNKS = ("chunk1", "chunk2")

# Directories / files of the stdlib that are not hand-written library code
# (tests, generated tables, build configuration, third-party packages).
STDLIB_SKIP_DIRS = {
    "__pycache__",
    "site-packages",
    "dist-packages",
    "lib-dynload",
    "test",
    "tests",
    "idle_test",
    "encodings",
    "pydoc_data",
    "_bundled",
}
STDLIB_SKIP_FILE_RE = re.compile(r"^_sysconfigdata_.*\.py$")
CVS_HEADER_RE = re.compile(r"^(\S.*) (\d+)$")
VERSE_RE = re.compile(r"^ +(\d+) (\S.*)$")

KJV_CHAPTERS = 1189
KJV_VERSES = 31102


def die(msg: str) -> None:
    sys.exit(f"error: {msg}")


def stable_key(*parts: str) -> str:
    """Hash used for every deterministic 'random' choice in this script."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Doc:
    set_name: str
    key: str  # unique, stable identifier (used only for ordering / splitting)
    text: str


# --------------------------------------------------------------------------- #
# Sources
# --------------------------------------------------------------------------- #
def read_kjv(bible_data: Path, bible_bin: str | None) -> list[Doc]:
    """One document per chapter: 'Genesis 1\\n\\n1 In the beginning ...'."""
    if not bible_data.is_file():
        die(f"KJV text {bible_data} not found: Debian package bible-kjv-text is missing; install it with: {APT_HINT}")
    exe = bible_bin or shutil.which("bible")
    if not exe or not Path(exe).exists():
        die(
            "the 'bible' reader for the compressed KJV text is missing: Debian "
            f"package bible-kjv is not installed; install it with: {APT_HINT}"
        )
    # -l: huge line width = one verse per line; -p/-d: data file location.
    cmd = [
        exe,
        "-l1000000",
        "-p",
        str(bible_data.parent),
        "-d",
        bible_data.name,
        "gen1:1-rev22:21",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip().replace("\n", " ")
        die(f"'{' '.join(cmd)}' failed ({err}); reinstall with: {APT_HINT}")

    chapters: list[tuple[str, list[str]]] = []
    for line in proc.stdout.decode("utf-8").split("\n"):
        if not line.strip():
            continue
        m = VERSE_RE.match(line)
        if m and chapters:
            chapters[-1][1].append(f"{m.group(1)} {m.group(2).rstrip()}")
            continue
        m = CVS_HEADER_RE.match(line)
        if not m:
            die(f"unexpected line in bible output: {line[:80]!r}")
        chapters.append((line.strip(), []))

    n_verses = sum(len(v) for _, v in chapters)
    if len(chapters) != KJV_CHAPTERS or n_verses != KJV_VERSES:
        die(f"expected {KJV_CHAPTERS} chapters / {KJV_VERSES} verses from bible, got {len(chapters)} / {n_verses}")
    return [
        Doc("RedPajamaBook", f"kjv/{i:04d}", title + "\n\n" + "\n".join(verses))
        for i, (title, verses) in enumerate(chapters)
    ]


def read_pydoc_topics(stdlib: Path) -> list[Doc]:
    """Reference-manual prose from pydoc_data/topics.py (parsed, not imported)."""
    path = stdlib / "pydoc_data" / "topics.py"
    if not path.is_file():
        die(f"{path} not found (is --stdlib a CPython Lib directory?)")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    topics = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "topics" for t in node.targets):
            topics = ast.literal_eval(node.value)
    if not isinstance(topics, dict) or not topics:
        die(f"no 'topics' dict in {path}")
    docs = []
    for i, name in enumerate(sorted(topics)):
        set_name = "RedPajamaWikipedia" if i % 2 == 0 else "RedPajamaCommonCrawl"
        docs.append(Doc(set_name, f"pydoc/{name}", topics[name].strip()))
    return docs


def list_stdlib_sources(stdlib: Path, min_bytes: int, max_bytes: int) -> list[str]:
    """Sorted relative paths of hand-written stdlib .py files within a size range."""
    if not (stdlib / "os.py").is_file():
        die(f"{stdlib} does not look like a Python stdlib directory (no os.py)")
    out = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_SKIP_DIRS and not d.startswith("config-"))
        for name in sorted(files):
            if not name.endswith(".py") or STDLIB_SKIP_FILE_RE.match(name):
                continue
            path = Path(root) / name
            size = path.stat().st_size
            if min_bytes <= size <= max_bytes:
                out.append(path.relative_to(stdlib).as_posix())
    return sorted(out)


def read_source(stdlib: Path, rel: str) -> str | None:
    try:
        return (stdlib / rel).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------- #
# Writers
# --------------------------------------------------------------------------- #
def write_jsonl_zst(path: Path, docs: list[Doc], level: int) -> int:
    import zstandard

    lines = [
        json.dumps(
            {"text": d.text, "meta": {"redpajama_set_name": d.set_name}},
            ensure_ascii=False,
        )
        for d in docs
    ]
    raw = ("\n".join(lines) + "\n").encode("utf-8")
    # Single-threaded, fixed level: the frame is a pure function of the input.
    data = zstandard.ZstdCompressor(level=level, threads=0).compress(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def write_parquet(path: Path, rows: list[tuple[str, str]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("max_stars_repo_path", pa.string()),
            ("max_stars_repo_name", pa.string()),
            ("max_stars_count", pa.int64()),
            ("id", pa.string()),
            ("content", pa.string()),
        ]
    )
    table = pa.table(
        {
            "max_stars_repo_path": [f"Lib/{rel}" for rel, _ in rows],
            "max_stars_repo_name": ["python/cpython"] * len(rows),
            "max_stars_count": [0] * len(rows),
            "id": [str(i) for i in range(len(rows))],
            "content": [text for _, text in rows],
        },
        schema=schema,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", compression_level=19)
    return path.stat().st_size


def split_docs(docs: list[Doc], holdout: float) -> tuple[list[Doc], list[Doc]]:
    """Stratified by set name; hash-ordered so the choice is stable and spread out."""
    train: list[Doc] = []
    valid: list[Doc] = []
    for set_name in sorted({d.set_name for d in docs}):
        group = sorted(
            (d for d in docs if d.set_name == set_name),
            key=lambda d: stable_key("split", d.set_name, d.key),
        )
        n_val = max(1, round(holdout * len(group))) if holdout > 0 else 0
        valid += group[:n_val]
        train += group[n_val:]
    return train, valid


def shuffled(docs: list[Doc], salt: str) -> list[Doc]:
    return sorted(docs, key=lambda d: stable_key(salt, d.set_name, d.key))


def debian_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def human(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


README_TEMPLATE = """\
# tinytitan sample corpus

A tiny, freely redistributable stand-in for the real pretraining data, laid out
exactly like the Hugging Face datasets `cerebras/SlimPajama-627B` and
`bigcode/starcoderdata` so the data loaders can be tested offline. It is
**generated** -- do not edit by hand. Regenerate with:

```
{apt_cmd}
python util/make_sample.py       # defaults: --out tinytitan/assets/sample
python util/train_tokenizer.py   # then retrain tinytitan/assets/tokenizer
```

The script is deterministic (same inputs, byte-identical files).

## Layout

```
SlimPajama-627B/train/chunk1/example_train_0.jsonl.zst      {n_chunk1} docs
SlimPajama-627B/train/chunk2/example_train_0.jsonl.zst      {n_chunk2} docs
SlimPajama-627B/validation/chunk1/example_holdout_0.jsonl.zst  {n_valid} docs
starcoderdata/python/train-00000-of-00001.parquet           {n_code} files
```

* `*.jsonl.zst`: zstd-compressed JSON lines,
  `{{"text": str, "meta": {{"redpajama_set_name": str}}}}` as in SlimPajama.
  Documents per set (train / validation):
{set_table}
  About {holdout_pct}% of the documents of each set are held out for validation.
  Records within a file are in a fixed pseudo-random (hash) order.
* `*.parquet`: columns `max_stars_repo_path` (string, `Lib/<path>` inside
  CPython), `max_stars_repo_name` (string, always `python/cpython`),
  `max_stars_count` (int64, always 0 -- not meaningful here), `id` (string,
  row number), `content` (string, the file's source text).

## Provenance and licences

| data | source | licence |
|---|---|---|
| `RedPajamaBook` docs (one Bible chapter each, `Book N` title line, then one numbered verse per line) | King James Version of the Bible, Debian package `bible-kjv-text` {kjv_version} (data file `/usr/lib/bible.data`), decoded with the `bible` program of Debian package `bible-kjv` {kjv_reader_version} | Public domain (KJV, 1611). Note: in the United Kingdom the KJV remains under Crown letters patent. The Debian packaging is described in `/usr/share/doc/bible-kjv-text/copyright`. |
| `RedPajamaWikipedia` / `RedPajamaCommonCrawl` docs (labels are synthetic, alternating by topic name) | `Lib/pydoc_data/topics.py` of CPython {py_version} (the Python Language Reference topics shown by `help()`) | PSF License Agreement, see `LICENSE-PSF.txt` |
| `RedPajamaGithub` docs | small `.py` modules of the CPython {py_version} standard library | PSF License Agreement, see `LICENSE-PSF.txt` |
| starcoderdata parquet | `.py` modules of the CPython {py_version} standard library (tests, `encodings/`, generated files and files outside {min_b}..{max_b} bytes excluded; hash-ordered subset up to {code_budget} bytes, rows sorted by path; disjoint from the `RedPajamaGithub` docs) | PSF License Agreement, see `LICENSE-PSF.txt` |

`LICENSE-PSF.txt` is a verbatim copy of `LICENSE.txt` from the Python
installation the stdlib files were taken from.

The labels `redpajama_set_name` only mimic SlimPajama's metadata so that set
filters (e.g. excluding `RedPajamaGithub`) can be exercised; the text does not
come from those corpora.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument(
        "--bible-data",
        type=Path,
        default=DEFAULT_BIBLE_DATA,
        help="KJV data file of Debian package bible-kjv-text (default: %(default)s)",
    )
    ap.add_argument("--bible-bin", default=None, help="'bible' reader program (default: from PATH)")
    ap.add_argument(
        "--stdlib",
        type=Path,
        default=Path(sysconfig.get_paths()["stdlib"]),
        help="Python stdlib directory (default: this interpreter's, %(default)s)",
    )
    ap.add_argument(
        "--code-bytes",
        type=int,
        default=1_700_000,
        help="budget of raw source bytes for the starcoderdata parquet",
    )
    ap.add_argument("--github-docs", type=int, default=24, help="RedPajamaGithub docs")
    ap.add_argument("--holdout", type=float, default=0.05, help="validation fraction")
    ap.add_argument("--min-file-bytes", type=int, default=300)
    ap.add_argument("--max-file-bytes", type=int, default=60_000)
    ap.add_argument("--zstd-level", type=int, default=19)
    args = ap.parse_args()

    stdlib: Path = args.stdlib.resolve()
    license_src = stdlib / "LICENSE.txt"

    # ---- sources ---------------------------------------------------------- #
    book_docs = read_kjv(args.bible_data, args.bible_bin)
    prose_docs = read_pydoc_topics(stdlib)

    candidates = list_stdlib_sources(stdlib, args.min_file_bytes, args.max_file_bytes)
    by_hash = sorted(candidates, key=lambda rel: stable_key("stdlib", rel))
    # Short modules (<= 4 KB) for the RedPajamaGithub snippets ...
    github_rels: list[str] = []
    for rel in by_hash:
        if len(github_rels) >= args.github_docs:
            break
        if (stdlib / rel).stat().st_size <= 4096 and read_source(stdlib, rel):
            github_rels.append(rel)
    github_docs = [
        Doc("RedPajamaGithub", f"stdlib/{rel}", read_source(stdlib, rel) or "") for rel in sorted(github_rels)
    ]
    # ... and a disjoint, hash-ordered subset within the byte budget for starcoder.
    code_rows: list[tuple[str, str]] = []
    used = 0
    taken = set(github_rels)
    for rel in by_hash:
        if rel in taken:
            continue
        text = read_source(stdlib, rel)
        if text is None or not text.strip():
            continue
        n = len(text.encode("utf-8"))
        if used + n > args.code_bytes:
            continue
        code_rows.append((rel, text))
        used += n
    code_rows.sort()

    # ---- SlimPajama layout ------------------------------------------------ #
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for sub in (SLIMPAJAMA, STARCODER):
        if (out / sub).exists():
            shutil.rmtree(out / sub)

    all_docs = book_docs + prose_docs + github_docs
    train, valid = split_docs(all_docs, args.holdout)
    train = shuffled(train, "train")
    chunks = {c: train[i :: len(TRAIN_CHUNKS)] for i, c in enumerate(TRAIN_CHUNKS)}

    sp = out / SLIMPAJAMA
    written: list[tuple[Path, int, int, int]] = []  # path, docs, raw bytes, file bytes
    for chunk, docs in chunks.items():
        p = sp / "train" / chunk / "example_train_0.jsonl.zst"
        size = write_jsonl_zst(p, docs, args.zstd_level)
        written.append((p, len(docs), sum(len(d.text.encode()) for d in docs), size))
    p = sp / "validation" / "chunk1" / "example_holdout_0.jsonl.zst"
    size = write_jsonl_zst(p, shuffled(valid, "validation"), args.zstd_level)
    written.append((p, len(valid), sum(len(d.text.encode()) for d in valid), size))

    # ---- starcoderdata layout --------------------------------------------- #
    p = out / STARCODER / STARCODER_FILE
    size = write_parquet(p, code_rows)
    written.append((p, len(code_rows), used, size))

    # ---- licence + README ------------------------------------------------- #
    if license_src.is_file():
        shutil.copyfile(license_src, out / "LICENSE-PSF.txt")
    else:
        print(f"warning: {license_src} not found; LICENSE-PSF.txt not written")

    if stdlib == Path(sysconfig.get_paths()["stdlib"]).resolve():
        py_version = platform.python_version()
    else:
        py_version = f"({stdlib.name}, from {stdlib})"
    set_names = sorted({d.set_name for d in all_docs})
    set_table = "\n".join(
        f"  * `{s}`: {sum(d.set_name == s for d in train)} / {sum(d.set_name == s for d in valid)}" for s in set_names
    )
    readme = README_TEMPLATE.format(
        apt_cmd=APT_HINT,
        n_chunk1=len(chunks["chunk1"]),
        n_chunk2=len(chunks["chunk2"]),
        n_valid=len(valid),
        n_code=len(code_rows),
        set_table=set_table,
        holdout_pct=round(100 * args.holdout),
        kjv_version=debian_version("bible-kjv-text"),
        kjv_reader_version=debian_version("bible-kjv"),
        py_version=py_version,
        min_b=args.min_file_bytes,
        max_b=args.max_file_bytes,
        code_budget=args.code_bytes,
    )
    (out / "README.md").write_text(readme, encoding="utf-8")

    # ---- report ----------------------------------------------------------- #
    print(f"wrote sample corpus to {out}")
    for path, n, raw, size in written:
        print(f"  {path.relative_to(out)}: {n} docs/files, {human(raw)} text, {human(size)} on disk")
    for s in set_names:
        n_tr = sum(d.set_name == s for d in train)
        n_va = sum(d.set_name == s for d in valid)
        print(f"  {s}: {n_tr} train / {n_va} validation docs")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"  total: {human(total)} in {out}")


if __name__ == "__main__":
    main()

"""Fixture corpora in the real layouts, and a word-level tokenizer that makes provenance visible.

Every document is ``d<id> w<k> w<k> ...``: the word-level tokenizer maps ``d<id>`` to token
``ID_BASE + id`` and every ``w<k>`` to one token, so a document of n words is n tokens and
its id token shows up exactly once wherever the document is emitted.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

BOS, EOS = 0, 1
ID_BASE = 1000
N_WORDS = 100
SET_NAMES = ["RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaGithub", "RedPajamaBook", "RedPajamaWikipedia"]


@dataclass
class Doc:
    id: int
    source: str
    file: str
    words: int  # tokens without BOS/EOS (0 for the empty document)
    set_name: str = ""
    holdout: bool = False


@dataclass
class Corpus:
    root: Path
    slimpajama: Path
    starcoderdata: Path
    tokenizer: Path
    docs: dict[int, Doc] = field(default_factory=dict)
    corrupt_file: str = ""
    empty_doc: int = -1

    def kept(self, source: str, *, excluded=("RedPajamaGithub",), include_corrupt=False) -> set[int]:
        """Training documents that a full pass should emit."""
        return {
            d.id
            for d in self.docs.values()
            if d.source == source
            and not d.holdout
            and d.words > 0
            and d.set_name not in excluded
            and (include_corrupt or d.file != self.corrupt_file)
        }


def _text(rng: random.Random, doc_id: int, n_words: int) -> str:
    return " ".join([f"d{doc_id}"] + [f"w{rng.randrange(N_WORDS)}" for _ in range(n_words - 1)])


def write_jsonl_zst(path: Path, records: list[dict], *, truncate: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = "".join(json.dumps(r) + "\n" for r in records).encode()
    blob = zstandard.ZstdCompressor(level=3).compress(raw)
    if truncate is not None:
        blob = blob[: int(len(blob) * truncate)]
    path.write_bytes(blob)


def write_tokenizer(folder: Path, max_id: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|begin_of_text|>": BOS, "<|end_of_text|>": EOS, "[UNK]": 2}
    for k in range(N_WORDS):
        vocab[f"w{k}"] = 3 + k
    for i in range(max_id + 1):
        vocab[f"d{i}"] = ID_BASE + i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})
    )


def make_corpus(root: Path, seed: int = 0) -> Corpus:
    rng = random.Random(seed)
    root = Path(root)
    c = Corpus(root, root / "SlimPajama-627B", root / "starcoderdata", root / "tokenizer")
    next_id = 0

    def new_doc(source, file, words, set_name="", holdout=False):
        nonlocal next_id
        d = Doc(next_id, source, file, words, set_name, holdout)
        c.docs[d.id] = d
        next_id += 1
        return d

    # SlimPajama: train/chunk{1,2,3}/example_train_{0,1}.jsonl.zst, short documents
    for chunk in (1, 2, 3):
        for n in (0, 1):
            rel = f"train/chunk{chunk}/example_train_{n}.jsonl.zst"
            records = []
            for j in range(40):
                set_name = SET_NAMES[(j + chunk + n) % len(SET_NAMES)]
                words = rng.randint(3, 60)
                if chunk == 1 and n == 0 and j == 7:
                    d = new_doc("slimpajama", rel, 0, set_name)
                    c.empty_doc = d.id
                    text = ""
                else:
                    d = new_doc("slimpajama", rel, words, set_name)
                    text = _text(rng, d.id, words)
                records.append({"text": text, "meta": {"redpajama_set_name": set_name}})
            truncate = None
            if chunk == 3 and n == 1:
                c.corrupt_file = rel
                truncate = 0.6
            write_jsonl_zst(c.slimpajama / rel, records, truncate=truncate)
    records = []
    for j in range(20):
        set_name = SET_NAMES[j % len(SET_NAMES)]
        words = rng.randint(3, 60)
        d = new_doc("slimpajama", "validation/chunk1/example_holdout_0.jsonl.zst", words, set_name, holdout=True)
        records.append({"text": _text(rng, d.id, words), "meta": {"redpajama_set_name": set_name}})
    write_jsonl_zst(c.slimpajama / "validation/chunk1/example_holdout_0.jsonl.zst", records)

    # Starcoderdata: two languages, long documents, several row groups
    for lang, files in (("python", [(40, 15), (30, 30)]), ("rust", [(30, 10)])):
        for n, (rows, group) in enumerate(files):
            rel = f"{lang}/train-{n:05d}-of-{len(files):05d}.parquet"
            cols = {k: [] for k in ("max_stars_repo_path", "max_stars_repo_name", "max_stars_count", "id", "content")}
            for j in range(rows):
                words = rng.randint(20, 200)
                d = new_doc("starcoderdata", rel, words)
                cols["content"].append(_text(rng, d.id, words))
                cols["id"].append(str(d.id))
                cols["max_stars_repo_path"].append(f"src/f{j}.{lang}")
                cols["max_stars_repo_name"].append(f"org/repo{j}")
                cols["max_stars_count"].append(j)
            path = c.starcoderdata / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(cols), path, row_group_size=group)
    write_tokenizer(c.tokenizer, next_id)
    return c


def mark_holdout(c: Corpus, source: str, first_file: str, n: int) -> None:
    """validation_docs = n holds out the first n documents of the first training file."""
    ids = sorted(d.id for d in c.docs.values() if d.source == source and d.file == first_file)
    for i in ids[:n]:
        c.docs[i].holdout = True


def sources(c: Corpus, *, sp_weight=0.7, sc_weight=0.3, **extra) -> list[dict]:
    return [
        dict(
            name="slimpajama",
            path=str(c.slimpajama),
            files="train/chunk*/*.jsonl.zst",
            weight=sp_weight,
            exclude={"meta.redpajama_set_name": ["RedPajamaGithub"]},
            validation_files="validation/chunk*/*.jsonl.zst",
            **extra,
        ),
        dict(
            name="starcoderdata",
            path=str(c.starcoderdata),
            files="*/train-*.parquet",
            text_field="content",
            weight=sc_weight,
            **extra,
        ),
    ]


_BASE_CONFIG = None


def job_config(c: Corpus, *, batch=4, seq_len=64, workers=0, data_overrides=None, source_list=None):
    """A real JobConfig (torchtitan's ConfigManager + tinytitan's sections) pointed at the corpus."""
    import copy

    from tinytitan.config import load_job_config
    from tinytitan.data.config import Data

    global _BASE_CONFIG
    if _BASE_CONFIG is None:
        _BASE_CONFIG = load_job_config(None, [])  # the debug config, parsed once per session
    cfg = copy.deepcopy(_BASE_CONFIG)
    data = dict(seed=1234, lanes=8, sources=source_list if source_list is not None else sources(c))
    data.update(data_overrides or {})
    cfg.data = Data(**data)
    cfg.training.local_batch_size, cfg.training.seq_len = batch, seq_len
    cfg.training.dataloader.num_workers, cfg.training.dataloader.prefetch_factor = workers, None
    cfg.model.hf_assets_path = str(c.tokenizer)
    cfg.validation.local_batch_size, cfg.validation.seq_len = batch, seq_len
    cfg.validation.steps, cfg.validation.freq = 2, 5
    return cfg


def tokenizer(c: Corpus):
    from tinytitan.tokenizer import load_tokenizer

    return load_tokenizer(c.tokenizer)


def loader(c: Corpus, rank=0, world=1, **kw):
    from tinytitan.data.build import build_dataloader

    return build_dataloader(dp_world_size=world, dp_rank=rank, tokenizer=tokenizer(c), job_config=job_config(c, **kw))


def doc_ids(t) -> list[int]:
    """Document ids whose id token appears in a tensor of token ids."""
    flat = t.reshape(-1).tolist()
    return [x - ID_BASE for x in flat if x >= ID_BASE]


def row_sources(c: Corpus, inputs) -> list[str]:
    """The source of each row the model receives, read from its document-id tokens (not from the loader).

    A window is cut from one source's stream, so every id token of a row must name the same source;
    fixture documents are shorter than the windows the tests use, so every row holds one.
    """
    found = []
    for row in inputs.tolist():
        names = {c.docs[x - ID_BASE].source for x in row if x >= ID_BASE}
        assert len(names) == 1, f"a window mixes or lacks sources: {names}"
        found.append(names.pop())
    return found


CURSOR = ("next_pass", "next_part", "next_doc", "next_token")  # where a lane's first unused token sits


def lane_cursors(state_dict: dict) -> dict[tuple[str, int], tuple[int, tuple]]:
    """(source, lane) -> (tokens the lane has served, its cursor), from a loader's ``state_dict()``."""
    from tinytitan.data.loader_state import STATE_KEY

    doc = json.loads(state_dict[STATE_KEY])
    return {
        (name, int(lid)): (st["tokens"], tuple(st[k] for k in CURSOR))
        for name, lanes in doc["lanes"].items()
        for lid, st in lanes.items()
    }


def reference_cursors(c: Corpus, windows: int, **kw) -> dict[tuple[str, int], dict[int, set]]:
    """Every lane's cursor after each number of tokens it served, from one reader taking one window at a time.

    A lane's stream is fixed by the seed alone (not by the readers, the stages or the batch), so a lane that
    served the same tokens in any run must sit at one of these cursors (several: a lane may read past documents
    that give no tokens, excluded or empty ones, before it serves again).
    """
    dl = loader(c, batch=1, **kw)
    out: dict[tuple[str, int], dict[int, set]] = {}
    it = iter(dl)
    for i in range(windows + 1):
        for key, (tokens, cursor) in lane_cursors(dl.state_dict()).items():
            out.setdefault(key, {}).setdefault(tokens, set()).add(cursor)
        if i < windows:
            next(it)
    return out


def assert_lanes_continue(reference: dict, state_dict: dict) -> int:
    """Every lane of a (resumed) run's state sits where the reference lane sits after the same tokens: no
    document repeated or skipped in any lane. Returns how many lanes had served tokens."""
    moved = 0
    for key, (tokens, cursor) in lane_cursors(state_dict).items():
        assert tokens in reference[key], f"lane {key} served {tokens} tokens, more than the reference run"
        assert cursor in reference[key][tokens], (key, tokens, cursor, reference[key][tokens])
        moved += tokens > 0
    return moved

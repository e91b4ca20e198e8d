"""``tinytitan export``: checkpoint -> verified HF and/or Meta folder, all or nothing.

Everything is written into a temporary folder next to ``--out``, verified
there, and renamed into place at the end: a failed or interrupted export leaves
``--out`` exactly as it was, and a folder at ``--out`` is always a checked one.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tinytitan.errors import TinytitanError
from tinytitan.export.verify import META_SUBFOLDER
from tinytitan.folders import (
    check_free_space,
    check_output_folder,
    make_temp_dir,
    replace_folder,
    write_filled_disk_error,
)

FORMATS = ("hf", "meta", "both")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class ExportResult:
    out: Path
    fmt: str
    flavor: str
    dtype: str
    source: str
    files: list[Path] = field(default_factory=list)
    verification: object = None  # tinytitan.export.parity.Verification, for the HF part


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="tensor", desc="export", disable=not enabled, leave=False)


class Prefetch:
    """Calls ``fn`` for the next name on a worker thread while the caller writes the current one.

    Reading a tensor (DCP load, cast, q/k reorder) and writing the previous one
    overlap, so an export takes about max(read, write) rather than their sum; at
    most two tensors are in memory.
    """

    def __init__(self, order: list[str], fn: Callable[[str], torch.Tensor]):
        from concurrent.futures import ThreadPoolExecutor

        self.order, self.fn = order, fn
        self.next_of = {name: order[i + 1] for i, name in enumerate(order[:-1])}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-read")
        self.pending: dict = {}

    def __call__(self, name: str) -> torch.Tensor:
        future = self.pending.pop(name, None) or self.pool.submit(self.fn, name)
        nxt = self.next_of.get(name)
        if nxt is not None and nxt not in self.pending:
            self.pending[nxt] = self.pool.submit(self.fn, nxt)
        return future.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()


def _write_hf(folder: Path, source, args, dtype, tok, bar) -> list[Path]:
    from tinytitan.export import safetensors_io
    from tinytitan.export.hf import generation_config, hf_config, hf_name, to_hf
    from tinytitan.export.safetensors_io import Planned, write_safetensors
    from tinytitan.export.tokenizer_files import write_tokenizer

    shapes = source.shapes()
    by_hf = {hf_name(n, shapes[n], args): n for n in source.names()}
    planned = [Planned(h, shapes[n], dtype) for h, n in by_hf.items()]

    def produce(hf: str) -> torch.Tensor:
        name = by_hf[hf]
        return to_hf(name, source.load(name, dtype), args)[1]

    with Prefetch([p.name for p in planned], produce) as prefetched:
        files = write_safetensors(
            folder,
            planned,
            prefetched,
            max_shard_bytes=safetensors_io.MAX_SHARD_BYTES,
            on_tensor=lambda _: bar.update(),
        )
    for name, content in (
        ("config.json", hf_config(args, bos_id=tok.bos_id, eos_id=tok.eos_id, dtype=dtype)),
        ("generation_config.json", generation_config(bos_id=tok.bos_id, eos_id=tok.eos_id)),
    ):
        (folder / name).write_text(json.dumps(content, indent=2) + "\n")
        files.append(folder / name)
    files += write_tokenizer(tok, folder)
    return files


def _export_bytes(shapes: dict, dtype: torch.dtype, fmt: str) -> int:
    """The weights' size on disk (plus 1 MiB for config, tokenizer and card); twice with --format both."""
    weights = sum(math.prod(shape) for shape in shapes.values()) * dtype.itemsize
    return weights * (2 if fmt == "both" else 1) + (1 << 20)


def export(
    checkpoint: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    fmt: str = "hf",
    config: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    step: int | str | None = None,
    flavor: str | None = None,
    dtype: str = "float32",
    verify: bool = True,
    force: bool = False,
    progress: bool = False,
    source=None,
    repo_id: str | None = None,
    license: str | None = None,
    log: Callable[[str], None] = print,
    weights: str = "raw",
) -> ExportResult:
    """Exports ``checkpoint`` (a step folder, or a checkpoint folder plus ``step``) to ``out``.

    What was trained -- flavor, tokenizer folder, sequence length (verification runs at it), data,
    precision, for the card -- comes from the run's record next to the checkpoint
    (``tinytitan.run.record``); ``config`` (a training TOML) overrides it, with a warning per key
    that disagrees; ``tokenizer`` and ``flavor`` override both. ``source`` replaces the checkpoint by
    another weight source (see ``tinytitan.export.source``). ``weights``: "raw", or "ema" for the average of
    the weights a run with ``[ema]`` saved (refused when the checkpoint has none). Raises ``TinytitanError``
    for bad input and failed verification, leaving ``out`` untouched.
    """
    from tinytitan.checkpoint.flavors import require_flavor
    from tinytitan.checkpoint.reader import open_checkpoint
    from tinytitan.checkpoint.stats import parent_of
    from tinytitan.export import card
    from tinytitan.export.source import DcpSource
    from tinytitan.export.tokenizer_files import read_tokenizer
    from tinytitan.models import flavor_args, summarize
    from tinytitan.run.record import read_trained_run

    if fmt not in FORMATS:
        raise TinytitanError(f"--format {fmt} is unknown: choose one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise TinytitanError(f"--dtype {dtype} is unknown: choose one of {', '.join(DTYPES)}")
    out = Path(out)
    trained = read_trained_run(checkpoint, config)
    tok_dir = tokenizer or (trained.tokenizer_dir if trained is not None else None)
    inputs = [("the checkpoint", checkpoint), ("the tokenizer folder", tok_dir), ("the config", config)]
    check_output_folder(out, [(what, Path(p)) for what, p in inputs if p is not None], force)
    if tok_dir is None and fmt != "meta":
        raise TinytitanError(
            "no tokenizer folder: the checkpoint has no run record (run.toml); pass --config TOML "
            "(its [model] hf_assets_path) or --tokenizer DIR"
        )
    tok = read_tokenizer(tok_dir) if tok_dir is not None else None
    if source is None:
        source = DcpSource(open_checkpoint(checkpoint, step, weights=weights))
    flavor = require_flavor(source.shapes(), flavor or (trained.flavor if trained else None), source.description)
    args = flavor_args(flavor)
    if tok is not None and tok.vocab_size > args.vocab_size:
        raise TinytitanError(
            f"tokenizer {tok.folder} has {tok.vocab_size} tokens but flavor {flavor!r} embeds {args.vocab_size}: pass the tokenizer it was trained with"
        )
    torch_dtype = DTYPES[dtype]
    stats = source.run_stats()
    which = getattr(source, "weights", "raw")
    parent = parent_of(trained)
    log(f"exporting {source.description} (flavor {flavor}, step {stats.step}, {which} weights) as {fmt}, {dtype}")

    need = _export_bytes(source.shapes(), torch_dtype, fmt)
    check_free_space(out, need, f"the {fmt} export")
    tmp = make_temp_dir(out, log)
    result = ExportResult(out, fmt, flavor, dtype, source.description)
    seq_len = trained.seq_len if trained is not None else card.DEFAULT_SEQ_LEN
    try:
        meta_dir = tmp if fmt == "meta" else tmp / META_SUBFOLDER
        n_tensors = len(source.names()) * (2 if fmt == "both" else 1)
        with _progress(n_tensors, progress) as bar:
            if fmt in ("hf", "both"):
                result.files += _write_hf(tmp, source, args, torch_dtype, tok, bar)
            if fmt in ("meta", "both"):
                from tinytitan.export.meta import write_meta

                meta_dir.mkdir(exist_ok=True)
                result.files += write_meta(meta_dir, source, args, torch_dtype, tok, on_tensor=lambda _: bar.update())
        summary = summarize(flavor, seq_len)
        name = repo_id or out.name

        def write_card() -> None:
            if fmt == "meta":
                return
            text = card.model_card(
                repo_name=name, flavor=flavor, summary=summary, stats=stats, trained=trained, dtype=dtype,
                verification=result.verification, license=license, parent=parent, weights=which,
            )  # fmt: skip
            (tmp / "README.md").write_text(text)
            record = card.provenance(
                flavor=flavor,
                trained=trained,
                stats=stats,
                dtype=dtype,
                source=source.description,
                verification=result.verification,
                fmt=fmt,
                weights=which,
                parent=parent,
                license=license,
            )
            (tmp / "tinytitan.json").write_text(record)
            # This machine's paths, for `eval`/`generate --model` here; hidden, so `push` never uploads it.
            local = {"run_record": str(trained.path.resolve()) if trained is not None and trained.recorded else None,
                     "source": source.description}  # fmt: skip
            (tmp / card.LOCAL_RECORD).write_text(json.dumps(local, indent=2) + "\n")

        write_card()
        if verify:
            from tinytitan.export.verify import verify_export

            reference = {name: source.load(name, torch.float32) for name in source.names()}
            result.verification = verify_export(
                tmp, args, reference, hf=fmt != "meta", meta=meta_dir if fmt != "hf" else None, seq_len=seq_len,
                dtype=torch_dtype, eos_id=tok.eos_id if tok is not None else None, log=log,
            )  # fmt: skip
            del reference
            write_card()
        if fmt != "meta":  # what push compares the folder with (tinytitan.export.edits)
            from tinytitan.export.edits import record_files

            record_files(tmp, card.LOCAL_RECORD)
        replace_folder(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise write_filled_disk_error(e, out, need, f"the {fmt} export") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.files = sorted(p for p in out.rglob("*") if p.is_file())
    return result

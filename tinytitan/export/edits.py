"""What ``export`` wrote into a folder, so that ``push`` can tell what was edited since.

``export`` verifies the folder against the training checkpoint; ``push`` can only re-check the folder
against itself (its weights are consistent with its config, whatever they are). So export keeps the
sha256 of every file it wrote in the folder's hidden local record (``card.LOCAL_RECORD``, never
uploaded), and ``push`` (``--dry-run`` too) compares the folder with it before anything else:

* the weights, configs, tokenizer files or ``tinytitan.json`` changed or removed: refused, one line
  naming the file (the folder is no longer the verified export of its checkpoint);
* the card (``README.md``) edited, or a file added: allowed (the card is prose a user may well edit
  before publishing), and said in one line each.

``tinytitan.json`` is compared without its ``license`` and ``datasets``: ``push --license/--dataset``
restate them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tinytitan.errors import TinytitanError

CARD = "README.md"
PROVENANCE = "tinytitan.json"
RESTATED_KEYS = ("license", "datasets")  # what push --license/--dataset may change in tinytitan.json
FILES_KEY = "files"


def _digest(path: Path, rel: str) -> str:
    if rel == PROVENANCE:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return "unreadable"
        if isinstance(doc, dict):
            kept = {k: v for k, v in doc.items() if k not in RESTATED_KEYS}
            return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def folder_digests(folder: Path) -> dict[str, str]:
    """Every file ``push`` uploads (not hidden ones): relative path -> sha256."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = _digest(p, rel.as_posix())
    return out


def record_files(folder: Path, local_record: str) -> None:
    """Adds the digests of ``folder``'s files to its local record (export calls it last)."""
    path = Path(folder) / local_record
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc[FILES_KEY] = folder_digests(folder)
    path.write_text(json.dumps(doc, indent=2) + "\n")


@dataclass
class Edits:
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def refused(self) -> list[tuple[str, str]]:
        """(file, 'changed' or 'was removed') for each edit push refuses."""
        return [(f, "changed") for f in self.changed if f != CARD] + [(f, "was removed") for f in self.removed]


def edits_since_export(folder: Path, local_record: str) -> Edits | None:
    """How ``folder`` differs from what export wrote; None when it keeps no record (an older export)."""
    try:
        written = json.loads((Path(folder) / local_record).read_text())[FILES_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = folder_digests(folder)
    return Edits(
        changed=[f for f in written if f in now and now[f] != written[f]],
        removed=[f for f in written if f not in now],
        added=[f for f in now if f not in written],
    )


def check_unedited(folder: Path, log: Callable[[str], None] = print, static: bool = True) -> None:
    """Refuses a folder whose weights, configs, tokenizer or tinytitan.json changed since ``export`` wrote them
    (``tinytitan.export.edits``); says in one line each that the card was edited or files were added.
    ``static``: first the folder's own checks (``check_hf_folder``), which name a damage (a truncated file, a
    config that fits no flavor) better than "changed"."""
    from tinytitan.export.card import LOCAL_RECORD
    from tinytitan.export.static_checks import check_hf_folder

    if (folder / "run.toml").is_file() and not (folder / "config.json").exists():
        raise TinytitanError(
            f"{folder} is a training run folder (it has run.toml), not an export: export a step first, e.g. "
            f"`tinytitan export {folder}/checkpoint/step-N --out DIR`, then push DIR"
        )
    if static:
        check_hf_folder(folder)
    edits = edits_since_export(folder, LOCAL_RECORD)
    if edits is None:
        if (folder / "config.json").is_file():
            log(f"note: {folder} keeps no record of the files `tinytitan export` wrote ({LOCAL_RECORD}): "
                "edits since the export cannot be told apart")  # fmt: skip
        return
    refused = edits.refused()
    if refused:
        name, what = refused[0]
        more = f" (and {len(refused) - 1} more files)" if len(refused) > 1 else ""
        raise TinytitanError(
            f"{folder}/{name} {what} since `tinytitan export` wrote and verified it{more}: push uploads only a "
            "folder as export wrote it; export the checkpoint again (push --license/--dataset restate the card)"
        )
    if CARD in edits.changed:
        log(f"note: {CARD} was edited since the export: it is uploaded as it is now")
    if edits.added:
        log(f"note: {', '.join(edits.added)} {'was' if len(edits.added) == 1 else 'were'} added since the export: "
            "uploaded too")  # fmt: skip

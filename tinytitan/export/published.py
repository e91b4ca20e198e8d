"""What an export may publish about its training, and what the user must decide before publishing.

* **Paths**: a published card or ``tinytitan.json`` names no path of the training machine. A path inside
  the installed package (``tinytitan/assets/...``) is the same everywhere and stays, relative; any other
  absolute path keeps only its last part (``…/SlimPajama-627B``; a checkpoint step folder its run:
  ``…/debug/checkpoint/step-20``). ``scrub`` applies that to every absolute path in a text (a quoted one
  whole, spaces included).
* **Datasets**: only those the user declared (``Source.declared_hub_id``: a source's ``hub_id``, or a
  ``path`` written ``hf://datasets/org/name``), the same of the run's parents, and ``push --dataset``. Never a guess from a
  folder's name.
* **Licenses**: the model's is the user's choice (``export --license``, ``push --license``); without one
  the card says ``license: unknown``. A source's ``license`` key is named beside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from tinytitan.config import SOURCE_ROOT

UNCHOSEN_LICENSE = "unknown"  # a license id the Hub knows: "not stated"
# An absolute path: "/" then a name, at a line's start or after a space, quote, backtick, bracket or "=" (not a
# glob's "*/x", a URL's "://", a shortened "…/x" or a word's "a/b").
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s\"'`(\[=]))(/[\w.~-][^\s'\"`,;|)\]}]*)", re.M)


def published_path(raw: str) -> str:
    """``raw`` as a published text may show it (see the module doc)."""
    if not raw or "://" in raw or not os.path.isabs(raw):
        return raw
    path = PurePosixPath(raw)
    try:
        return str(Path(raw).relative_to(SOURCE_ROOT))
    except ValueError:
        pass
    keep = 3 if path.name.startswith("step-") and len(path.parts) > 3 else 1
    return "…/" + "/".join(path.parts[-keep:])


# A quoted absolute path (a TOML or JSON string, a Markdown code span): the whole string, spaces included.
_QUOTED = re.compile(r'"(/[^\s/"][^"\n]*)"|\'(/[^\s/\'][^\'\n]*)\'|`(/[^\s/`][^`\n]*)`')


def scrub(text: str) -> str:
    """Every absolute path in ``text`` as ``published_path`` shows it: a quoted one whole (``"/data/my runs/x"``),
    then an unquoted one up to the first space."""

    def quoted(m: re.Match) -> str:
        index = next(i for i in (1, 2, 3) if m.group(i) is not None)
        quote = m.group(0)[0]
        return f"{quote}{published_path(m.group(index))}{quote}"

    return _ABSOLUTE.sub(lambda m: published_path(m.group(1)), _QUOTED.sub(quoted, text))


def declared_datasets(trained, parent=None, extra=()) -> list[str]:
    """The Hub dataset ids of the card's metadata: the run's sources', its parents', then ``extra``."""
    found: list[str] = []
    sources = list(trained.job.data.sources) if trained is not None else []
    ids = [s.declared_hub_id() for s in sources]
    for link in parent.chain() if parent is not None else []:
        ids += link.datasets
    for hub_id in [*ids, *extra]:
        if hub_id and hub_id not in found:
            found.append(hub_id)
    return found


def source_licenses(trained) -> list[tuple[str, str]]:
    """(source name, its declared license or '') for every source of the run."""
    if trained is None:
        return []
    return [(s.name, getattr(s, "license", "") or "") for s in trained.job.data.sources]


def decisions(*, license: str, datasets: list[str], data_licenses: list[tuple[str, str]], private: bool) -> list[str]:
    """What the user has not decided yet before publishing (``push --dry-run`` lists them)."""
    out = []
    if not license or license == UNCHOSEN_LICENSE:
        out.append("license: not chosen (the card says `license: unknown`): pass --license ID (e.g. apache-2.0, "
                   "mit, cc-by-4.0), one the training data's licenses allow")  # fmt: skip
    undeclared = [name for name, lic in data_licenses if not lic]
    if undeclared:
        out.append(f"data licenses: {', '.join(undeclared)} declare none (license = '…' in their [[data.sources]] "
                   "table): check the terms of that data yourself")  # fmt: skip
    if not datasets:
        out.append("datasets: the card names no Hub dataset: pass --dataset ORG/NAME for each one the model was "
                   "trained on (or set hub_id in [[data.sources]]), or publish without")  # fmt: skip
    if private:
        out.append("visibility: private (pass --public to publish it openly)")
    return out

"""The README and docs/: every relative link resolves (file and #anchor), and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 400

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lowercase, punctuation dropped but - and _, spaces -> -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page (GitHub's -1, -2 suffixes for repeated headings), and ``<a id="...">``."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text()):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    """The targets of the Markdown links in a page's prose (not in code)."""
    targets = []
    for line in prose_lines(page.read_text()):
        targets += LINK.findall(INLINE_CODE.sub("", line))
    return targets


def test_slug_follows_github():
    assert slug("`train` (and `run_llama_train.sh`)") == "train-and-run_llama_trainsh"
    assert slug("Benchmark accuracy: `tinytitan eval tasks`") == "benchmark-accuracy-tinytitan-eval-tasks"
    assert slug("Stages: a recipe over tokens") == "stages-a-recipe-over-tokens"
    assert slug("Memory: what fits where") == "memory-what-fits-where"


def test_link_finder_skips_code(tmp_path):
    page = tmp_path / "p.md"
    page.write_text('[a](x.md#y) `[b](no.md)`\n```\n[c](no.md)\n# not a heading\n```\n## Real one\n<a id="z"></a>\n')
    assert links(page) == ["x.md#y"]
    assert anchors(page) == {"real-one", "z"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move details to docs/"

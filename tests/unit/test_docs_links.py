"""Every relative link in the README and the manuals leads somewhere.

The manuals link to each other and to the repository's files by relative path and heading
anchor; a page or a heading that moves must not leave a reader at a dead end.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def _outside_code(path: Path) -> list[tuple[int, str]]:
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', -1 for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in _outside_code(path):
        match = _HEADING.match(line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(2).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            result.add(slug if count == 0 else f"{slug}-{count}")
            seen[slug] = count + 1
    return result


def broken_links(path: Path) -> list[str]:
    broken = []
    for number, line in _outside_code(path):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            if not destination.exists():
                broken.append(f"{path.name}:{number}: no file {target}")
            elif anchor and (destination.suffix != ".md" or anchor not in anchors(destination)):
                broken.append(f"{path.name}:{number}: no heading #{anchor} in {file_part}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_a_dead_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[fine](other.md#a-heading) [gone](missing.md) [moved](other.md#old-heading)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert broken_links(page) == [
        "page.md:1: no file missing.md",
        "page.md:1: no heading #old-heading in other.md",
    ]


def test_the_readme_fits_on_a_couple_of_screens() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 150

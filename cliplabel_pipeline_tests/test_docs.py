"""The README and the pages under docs/ stay honest: every relative link reaches a file and, where it names
one, a heading of that file; every repository path they name exists; every `make` target they show is in the
Makefile; and the README stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
REPO_PATH = re.compile(r"`((?:cliplabel_pipeline|cliplabel_pipeline_tests|benchmarks|deploy|concept_bank|docs)/[^`\s]*)`")
MAKE = re.compile(r"(?:^|`|&& )make ([a-z][a-z-]*)", re.M)  # a command, not the English verb


def prose(text: str) -> str:
    """The page without its fenced code blocks (a `[x](y)` inside code is not a link)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (backticks too) dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_the_pages_are_there():
    names = {p.name for p in PAGES}
    assert {"README.md", "cli.md", "dagster.md", "http.md", "cluster.md", "security.md", "performance.md",
            "interop.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_reaches_a_file_and_its_heading(page):
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_repository_path_named_exists(page):
    named = {p.rstrip(".,;:") for p in REPO_PATH.findall(page.read_text(encoding="utf-8"))}
    missing = sorted(p for p in named if not re.search(r"[<>{}*]", p) and not (REPO / p).exists())
    assert not missing, f"{page.name} names paths that are not in the repository: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_shown_is_in_the_makefile(page):
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    shown = set(MAKE.findall(page.read_text(encoding="utf-8")))
    assert shown <= targets, f"{page.name} shows make targets the Makefile lacks: {sorted(shown - targets)}"


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines: move detail to a page under docs/"
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text
    assert re.search(r"!\[[^\]]*\]\(docs/[^)]+\.png\)", text), "the README shows one picture of a report"

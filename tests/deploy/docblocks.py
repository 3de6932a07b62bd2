"""Reading the project's Markdown: fenced code blocks, headings' anchors and links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from deployfiles import ROOT

# The user-facing pages: the README and everything under docs/.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None  # the reason, when the line before the fence says it is not run
    output: str | None  # a ```json block right after it: what the example answers

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang})"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        before = lines[start - 1] if start else ""
        reason = NOT_RUN.search(before)
        found.append(
            Block(page, start + 1, m.group(1), "\n".join(body) + "\n", reason and reason[1], None)
        )
        i += 1
        if found[-1].lang != "json" and i < len(lines) and lines[i] == "```json":
            j = i + 1
            out = []
            while not lines[j].startswith("```"):
                out.append(lines[j])
                j += 1
            found[-1].output = "\n".join(out)
    return found


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in ("sh", "python") and b.not_run is None]


def prose(page: Path) -> str:
    """The page without its code blocks."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def links(page: Path) -> list[str]:
    """Targets of Markdown links and images in the page's prose."""
    return re.findall(r"\]\(([^)\s]+)\)", prose(page))

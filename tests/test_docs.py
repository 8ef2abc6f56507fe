"""The reasons are inside the repository: whatever the code and docs cite, a reader can open.

Two rules, checked over every text file of the repository (code, tests, scripts, deploy files,
docs) except this one, which has to spell out what it looks for:

* nothing cites a document that is not in the repository: the team's design notes ("DESIGN section
  N", ``DESIGN.md``), the shared Twilio reference ("reference 3.2", ``twilio-callbacks.md``), the
  ``../shared`` folder they live in, or a page of the repository by section *number* (numbers move;
  headings are the stable names);
* a citation of a Markdown file of the repository (``docs/X.md``, ``bench/RESULTS.md``,
  ``README.md``, or just ``README``) names a file that exists, and the heading it names, written
  ``docs/X.md, "Heading"`` (a second one may follow: ``and "Other heading"``) or
  ``docs/X.md#anchor``, exists in that file.

Cost: one read of each file, well under a second.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent

#: Folders that hold no text of ours: tools' caches, environments, build and bench output.
_SKIPPED_DIRS: Final = frozenset(
    (".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
     "build", "dist", "var", "out")
)  # fmt: skip
#: Files never read: local secrets, and this file (its patterns would match themselves).
_SKIPPED_FILES: Final = frozenset((ROOT / ".env", Path(__file__).resolve()))

#: Citations of documents a reader of the repository cannot open.
OUTSIDE: Final = {
    "the design notes": re.compile(r"\bDESIGN\b"),
    "the shared reference by number": re.compile(r"\b[Rr]eference\s+(?:(?:#|//|--)\s*)?(?:sections?\s+)?\d"),
    "a shared reference file": re.compile(r"twilio-callbacks\.md|twilio-making-calls|\bSTYLE\.md"),
    "the shared folder": re.compile(r"\.\./shared\b|/work/shared\b|\bshared/(?:reference|DESIGN|STYLE)"),
    "a page by section number": re.compile(r"\b(?:[\w-]+/)*[\w.-]+\.md,?\s+(?:section|§)\s*\d"),
}

_WRAP: Final = r"(?:(?:,[ \t]*|[ \t]+)(?:\n[ \t]*(?:#:?)?[ \t]*)?|\n[ \t]*(?:#:?)?[ \t]*)"
#: ``docs/X.md``, ``bench/RESULTS.md`` or ``README(.md)``, then ``#anchor`` or up to two quoted
#: headings. A heading may be wrapped over lines of a docstring or a ``#`` comment.
CITATION: Final = re.compile(
    r"(?<![\w/.-])(?:\.\./)?(?P<path>(?:docs|bench)/[\w.-]+\.md|README(?:\.md)?)"
    r"(?:#(?P<anchor>[\w-]+)"
    rf"|{_WRAP}[\"“](?P<heading>[^\"”]{{1,120}})[\"”](?:\s+and\s+[\"“](?P<also>[^\"”]{{1,120}})[\"”])?)?"
)


def text_files() -> Iterator[tuple[Path, str]]:
    """Every UTF-8 text file, with its text, under the repository root, outside :data:`_SKIPPED_DIRS`."""
    for directory, subdirectories, names in os.walk(ROOT):
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")
        )
        for name in sorted(names):
            path = Path(directory, name)
            if path in _SKIPPED_FILES:
                continue
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # images and other binary files


def outside_citations(text: str) -> list[tuple[int, str, str]]:
    """``(line, what, matched text)`` for each citation of a document outside the repository."""
    return [
        (_line(text, match.start()), what, match.group(0))
        for what, pattern in OUTSIDE.items()
        for match in pattern.finditer(text)
    ]


def broken_citations(text: str) -> list[tuple[int, str]]:
    """``(line, problem)`` for each citation of a repository Markdown file that does not resolve."""
    problems = []
    for match in CITATION.finditer(text):
        line, path = _line(text, match.start()), match["path"]
        headings = _headings(path)
        if headings is None:
            problems.append((line, f"{path} does not exist"))
            continue
        if match["anchor"] is not None and match["anchor"] not in {_slug(h) for h in headings}:
            problems.append((line, f"{path} has no heading with the anchor #{match['anchor']}"))
        for cited in (match["heading"], match["also"]):
            if cited is not None and _unwrap(cited) not in headings:
                problems.append((line, f'{path} has no heading "{_unwrap(cited)}"'))
    return problems


@cache
def _headings(path: str) -> frozenset[str] | None:
    """The headings of a repository Markdown file (outside fenced code), or ``None`` if it is missing."""
    file = ROOT / ("README.md" if path == "README" else path)
    if not file.is_file():
        return None
    headings, fenced = set(), False
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6}\s+(.+?)\s*$", line)):
            headings.add(heading[1])
    return frozenset(headings)


def _unwrap(heading: str) -> str:
    """A heading as cited, with the line breaks (and comment markers) of its wrapping removed."""
    return re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", heading).strip()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_nothing_cites_a_document_outside_the_repository() -> None:
    """No file cites the design notes, the shared reference or a page by section number."""
    found = [
        f"{_where(path, line)}: {what}: {matched!r}"
        for path, text in text_files()
        for line, what, matched in outside_citations(text)
    ]
    assert found == []


def test_every_cited_repository_page_and_heading_exists() -> None:
    """Each ``docs/X.md`` (``bench/RESULTS.md``, ``README.md``) citation resolves, heading included."""
    found = [
        f"{_where(path, line)}: {problem}"
        for path, text in text_files()
        for line, problem in broken_citations(text)
    ]
    assert found == []


def test_the_docs_are_cited_from_the_code() -> None:
    """The scan sees the code's citations: if it found none, the two tests above would prove nothing."""
    cited = {
        match["path"] for _, text in text_files() for match in CITATION.finditer(text) if match["heading"]
    }
    assert {"docs/contracts.md", "docs/twilio.md"} <= cited


class TestTheChecks:
    """The checks themselves, on small texts, so that a regression in them cannot pass silently."""

    @pytest.mark.parametrize(
        "text",
        [
            "the reconciliation identity of DESIGN section 3",
            "see ../shared/DESIGN.md",
            "Twilio signs the URL (reference 3.1-3.2)",
            "(reference section 5, twilio-oai patterns)",
            "Reference 3.4: Twilio puts",
            "signed the whole URL (reference\n    # 3.3), so",
            "``shared/reference/twilio-callbacks.md`` section 3",
            "(docs/twilio.md section 4)",
        ],
    )
    def test_outside_citations_are_found(self, text: str) -> None:
        """Each way the code used to cite the shared documents is reported."""
        assert outside_citations(text) != []

    @pytest.mark.parametrize(
        "text",
        [
            "bench.designs.DESIGNS lists the peers",
            'see docs/contracts.md, "Status rank"',
            "a reference to the event",
        ],
    )
    def test_ordinary_text_is_not_reported(self, text: str) -> None:
        """Words that merely resemble a citation are not reported."""
        assert outside_citations(text) == []

    def test_a_heading_wrapped_over_comment_lines_resolves(self) -> None:
        """A heading split by a line break and a ``#:`` marker is read back whole."""
        text = '#: the field it becomes (docs/twilio.md, "The REST Call\n#: resource" and "Call statuses").'
        assert broken_citations(text) == []

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ('(docs/twilio.md, "No such heading")', 'docs/twilio.md has no heading "No such heading"'),
            ('(docs/twilio.md, "SIDs" and "Nor this")', 'docs/twilio.md has no heading "Nor this"'),
            (
                "docs/contracts.md#no-such-anchor",
                "docs/contracts.md has no heading with the anchor #no-such-anchor",
            ),
            ("see docs/nowhere.md", "docs/nowhere.md does not exist"),
            ('(README, "No such heading")', 'README has no heading "No such heading"'),
        ],
    )
    def test_broken_citations_are_found(self, text: str, problem: str) -> None:
        """A missing page, heading or anchor is reported with the line it is on."""
        assert broken_citations("first line\n" + text) == [(2, problem)]

    def test_an_anchor_resolves_like_on_github(self) -> None:
        """``#anchor`` is GitHub's slug of a heading."""
        assert broken_citations("docs/contracts.md#http-contract") == []

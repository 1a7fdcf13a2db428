"""The code cites docs/protocol.md by section, ``(protocol.md 3.5)``: every such citation
in src/ and tests/ must name a section (or a row of the section 7 table) that the document
has, and no citation of the old, out-of-tree document ("spec N.N", "exec-protocol.md")
may remain."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "protocol.md"
SUFFIXES = {".py", ".txt", ".md", ".toml", ".cfg", ".sh"}

#: ``protocol.md 3.1, 5.2`` / ``3.5-3.7`` / ``3.2/3.3`` / ``7 row 13`` / ``2.7 item 5``
CITATION = re.compile(
    r"(?<![\w-])protocol\.md\s+(?P<numbers>\d+(?:\.\d+)?(?:\s*(?:,|-|/|and)\s*\d+(?:\.\d+)?)*)"
    r"(?:\s+row\s+(?P<row>\d+))?"
)
NUMBER = re.compile(r"\d+(?:\.\d+)?")
#: How the old document was cited: "spec 4.2", "spec section 7", "spec sections 3.5-3.7",
#: "exec-protocol.md section 2.7".
OLD_CITATION = re.compile(r"\bspecs?(?: sections?)? §?\d|exec-protocol\.md")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)
TABLE_ROW = re.compile(r"^\| (\d+) \|", re.MULTILINE)


def doc_sections(text: str) -> set[str]:
    return set(HEADING.findall(text))


def section_7_rows(text: str) -> set[int]:
    start = text.index("\n## 7.")
    end = text.index("\n## ", start + 1)
    return {int(n) for n in TABLE_ROW.findall(text[start:end])}


def citations(text: str) -> list[tuple[list[str], int | None]]:
    """Each citation's section numbers (a range gives its two ends) and its row."""
    found = []
    for m in CITATION.finditer(text):
        row = int(m.group("row")) if m.group("row") else None
        found.append((NUMBER.findall(m.group("numbers")), row))
    return found


def cited_files() -> list[pathlib.Path]:
    """Text files of src/ and tests/, but this one (it holds examples of both forms)."""
    files = []
    for top in ("src", "tests"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in SUFFIXES or "__pycache__" in path.parts:
                continue
            if path.is_file() and path.resolve() != pathlib.Path(__file__).resolve():
                files.append(path)
    return files


def test_the_document_has_its_numbered_sections() -> None:
    text = DOC.read_text()
    sections = doc_sections(text)
    for number in ("1", "2", "2.1", "3", "3.1", "3.9", "4.5", "5.9", "6.3", "7", "8"):
        assert number in sections, number
    assert HEADING.findall(text) == sorted(set(HEADING.findall(text)), key=_order)
    assert {13, 14} <= section_7_rows(text)


def _order(number: str) -> tuple[int, ...]:
    return tuple(int(part) for part in number.split("."))


def test_citation_parsing() -> None:
    text = (
        "(protocol.md 3.1, 5.2) (protocol.md 5.3-5.5) protocol.md 7 row 13; protocol.md 2.7 item 5"
    )
    assert citations(text) == [
        (["3.1", "5.2"], None),
        (["5.3", "5.5"], None),
        (["7"], 13),
        (["2.7"], None),
    ]
    assert citations("see protocol.md\n    3.5) for why") == [(["3.5"], None)]
    for old in ("(spec 4.2)", "spec section 3.4", "spec sections 3.5-3.7", "exec-protocol.md 2.2"):
        assert OLD_CITATION.search(old), old
    for fine in ('pod["spec"]', "the container spec has", "a spec change", "specs: 3"):
        assert not OLD_CITATION.search(fine), fine


def test_every_citation_names_a_section_of_the_document() -> None:
    text = DOC.read_text()
    sections = doc_sections(text)
    rows = section_7_rows(text)
    wrong = []
    count = 0
    for path in cited_files():
        for numbers, row in citations(path.read_text(errors="replace")):
            count += 1
            wrong += [f"{path.relative_to(ROOT)}: {n}" for n in numbers if n not in sections]
            if row is not None and (numbers != ["7"] or row not in rows):
                wrong.append(f"{path.relative_to(ROOT)}: {numbers} row {row}")
    assert not wrong, "citations of sections docs/protocol.md does not have:\n" + "\n".join(wrong)
    if count == 0:
        pytest.fail("no protocol.md citation found at all: is the pattern still right?")


def test_no_citation_of_the_old_document_remains() -> None:
    left = []
    for path in cited_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OLD_CITATION.search(line):
                left.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not left, "cite docs/protocol.md instead:\n" + "\n".join(left)

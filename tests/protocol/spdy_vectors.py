"""Loader for the SPDY vector files in tests/protocol/data (format described in each file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


@dataclass
class Record:
    section: str
    head: list[str]  # words before the JSON fields
    fields: Any
    raw: bytes


def load(name: str) -> list[Record]:
    records: list[Record] = []
    section = ""
    for line in (DATA / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("=="):
            section = line[2:].split(":")[0].strip()
        elif line[0].isspace():
            records[-1].raw += bytes.fromhex(line)
        else:
            brace = line.index("{") if "{" in line else line.index("null")
            head, fields = line[:brace].split(), json.loads(line[brace:])
            records.append(Record(section, head, fields, b""))
    return records


def direction(records: list[Record], way: str) -> list[Record]:
    return [r for r in records if r.head[0] == way]

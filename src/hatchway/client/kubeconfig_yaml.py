"""A fast reader for the plain YAML that kubeconfig files are written in, so that an exec
does not pay for importing PyYAML (about a tenth of ``hatchway exec``'s start-up here).

It reads block mappings and block sequences of simple scalars — what ``kubectl config``,
``yaml.safe_dump`` and Hatchway write — and gives up (returns ``None``) on anything else:
flow collections other than ``{}``/``[]``, anchors, tags, block or multi-line scalars,
escapes, comments after values, and plain scalars whose type YAML 1.1 could resolve to
something other than a string, bool, null or decimal int. The caller then uses PyYAML,
so the result is always what ``yaml.safe_load`` would give (a property test pins it).
"""

from __future__ import annotations

import re

from hatchway.errors import HatchwayError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*\Z")
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)\Z")
#: Plain scalars that are safely strings: no indicator first, no ": " or " #" inside,
#: nothing YAML 1.1 resolves (numbers, dates, "=", "<<" start with a digit, sign, dot...).
_PLAIN = re.compile(r"[A-Za-z_/][^\"'#\[\]{},]*\Z")
_UNUSUAL = re.compile(r"[^\x20-\x7e\n]")  # tabs, CR, controls, non-ASCII: PyYAML decides
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False}
_BOOL["FALSE"] = False
_NULL = {"null", "Null", "NULL", "~", ""}
_OTHER_BOOLS = {"y", "n", "yes", "no", "on", "off"}  # YAML 1.1: any case → bail


class _GiveUp(HatchwayError):
    pass


def load(text: str) -> dict[str, Any] | None:
    """The document as ``yaml.safe_load`` would read it, or None when unsure."""
    if _UNUSUAL.search(text):
        return None
    lines = []
    for raw in text.split("\n"):
        stripped = raw.strip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        if stripped in ("---", "..."):
            return None
        lines.append((len(raw) - len(raw.lstrip(" ")), stripped))
    if not lines:
        return None
    try:
        value, end = _block(lines, 0, lines[0][0])
    except (_GiveUp, IndexError):
        return None
    if end != len(lines) or not isinstance(value, dict):
        return None
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent, {})


def _mapping(
    lines: list[tuple[int, str]], i: int, indent: int, out: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    while i < len(lines) and lines[i][0] == indent:
        key, rest = _split_key(lines[i][1])
        i += 1
        if rest:
            out[key] = _scalar(rest)
        elif i < len(lines) and (
            lines[i][0] > indent or (lines[i][0] == indent and lines[i][1][:2] in ("- ", "-"))
        ):
            out[key], i = _block(lines, i, lines[i][0])
        else:
            out[key] = None
    if i < len(lines) and lines[i][0] > indent:
        raise _GiveUp  # a continuation line (multi-line scalar) or bad indentation
    return out, i


def _sequence(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1][:2] in ("- ", "-"):
        item = lines[i][1][2:].lstrip(" ")
        if not item:
            if i + 1 < len(lines) and lines[i + 1][0] > indent:
                value, i = _block(lines, i + 1, lines[i + 1][0])
            else:
                value, i = None, i + 1
        elif item.startswith("- "):
            raise _GiveUp  # nested inline sequences
        elif _is_entry(item):
            # "- key: value" opens a mapping whose other keys sit under "key".
            inner = indent + (len(lines[i][1]) - len(item))
            lines[i] = (inner, item)
            value, i = _mapping(lines, i, inner, {})
        else:
            value, i = _scalar(item), i + 1
        out.append(value)
    if i < len(lines) and lines[i][0] > indent:
        raise _GiveUp
    return out, i


def _is_entry(text: str) -> bool:
    return ": " in text or text.endswith(":")


def _split_key(text: str) -> tuple[str, str]:
    key, sep, rest = text.partition(":")
    if not sep or (rest and not rest.startswith(" ")) or not _KEY.match(key):
        raise _GiveUp
    if key in _BOOL or key in _NULL or key.lower() in _OTHER_BOOLS:
        raise _GiveUp
    return key, rest.strip(" ")


def _scalar(text: str) -> Any:
    if text == "{}":
        return {}
    if text == "[]":
        return []
    if text in _BOOL:
        return _BOOL[text]
    if text in _NULL:
        return None
    if _INT.match(text):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        inner = text[1:-1]
        if "\\" in inner or '"' in inner:
            raise _GiveUp
        return inner
    if len(text) >= 2 and text[0] == text[-1] == "'":
        inner = text[1:-1]
        if "'" in inner.replace("''", ""):
            raise _GiveUp
        return inner.replace("''", "'")
    if (
        not _PLAIN.match(text)
        or ": " in text
        or text.endswith(":")
        or text.lower() in _OTHER_BOOLS
        or text.rstrip(" ") != text
    ):
        raise _GiveUp
    return text

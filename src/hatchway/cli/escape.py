"""Escaping of text that comes from a server before it is printed: no control character
reaches the user's terminal. Apart from cli/terminal.py, whose termios and signals an exec
without a terminal never needs."""

from __future__ import annotations

import re

# C0 except \t and \n, DEL, C1; bidirectional overrides/isolates (they reorder what the
# user reads); lone surrogates (undecodable bytes that would crash printing). Compiled
# at its first use (re keeps it), not at import: an exec that fails prints through here,
# one that succeeds never does (~0.6 ms of its start).
_UNSAFE = "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(s: str) -> str:
    """``s`` safe to print: control characters become ``\\x1b``-style escapes, so a
    server's message cannot move the cursor, retitle the window or ring the bell.
    Newlines, tabs and printable Unicode are kept."""
    if not re.search(_UNSAFE, s):
        return s
    return re.sub(_UNSAFE, _escape_one, s)

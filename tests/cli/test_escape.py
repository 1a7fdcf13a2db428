"""Escaping of server text before it is printed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.cli.escape import escape_control


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # window title via OSC
        ("ding\a", "ding\\x07"),
        ("\x9b2J", "\\x9b2J"),  # C1 CSI
        ("\x85\x90\x9f", "\\x85\\x90\\x9f"),
        ("a\x7fb", "a\\x7fb"),
        ("\x00\x08\x0b\x0c\r", "\\x00\\x08\\x0b\\x0c\\x0d"),
        ("line one\nline two\tcol", "line one\nline two\tcol"),
        ("héllo wörld 日本語 🚀 \u00a0\u00ff", "héllo wörld 日本語 🚀 \u00a0\u00ff"),
        ("abc\u202edcba", "abc\\u202edcba"),
        ("bad \udcff byte", "bad \\udcff byte"),
        ("", ""),
        ("C:\\path\\x1b", "C:\\path\\x1b"),  # a literal backslash sequence stays as it is
    ],
)
def test_escape_control(raw: str, shown: str) -> None:
    assert escape_control(raw) == shown


@given(st.text())
def test_escape_control_leaves_no_control_characters(s: str) -> None:
    out = escape_control(s)
    for ch in out:
        code = ord(ch)
        assert ch in "\n\t" or not (code < 0x20 or 0x7F <= code <= 0x9F)
        assert not 0xD800 <= code <= 0xDFFF
    assert escape_control(out) == out


@given(st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs", "Cf"))))
def test_escape_control_keeps_printable_text(s: str) -> None:
    assert escape_control(s) == s

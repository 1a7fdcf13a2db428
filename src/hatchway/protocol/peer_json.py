"""JSON a peer sent: too deep is bad JSON like any other.

Python's decoder recurses, so a body of nested brackets (a few KiB of ``[``) raises
``RecursionError``, which no ``except ValueError`` catches: a request became a 500, a
node's answer a crash. :func:`loads` raises it as a :class:`json.JSONDecodeError` (a
``ValueError``) with Go's message instead; Go's decoder stops at 10,000 levels with the
same words, Python's at about its recursion limit.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TOO_DEEP = "exceeded max depth"


def loads(data: bytes | str) -> Any:
    """``json.loads``; a nesting deeper than Python's stack raises ``JSONDecodeError``."""
    try:
        return json.loads(data)
    except RecursionError:
        doc = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        raise json.JSONDecodeError(TOO_DEEP, doc, 0) from None


def too_deep(exc: ValueError) -> bool:
    """Whether :func:`loads` raised ``exc`` for the nesting (not for a syntax error)."""
    return isinstance(exc, json.JSONDecodeError) and exc.msg == TOO_DEEP

"""Container log options (the kubelet's ``containerLogs`` query) and reading a raw log.

The runtime keeps each container's output as raw bytes (``runtime.py``): no per-line
timestamps. So ``tailLines`` and ``limitBytes`` are exact, while ``sinceSeconds`` and
``sinceTime`` can only be judged for the log as a whole: a log last written before the
time yields nothing (with ``follow``, only what is written from now on), any other
yields all of it. ``timestamps`` is refused (400) rather than answered without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from hatchway.errors import HatchwayError

_BLOCK = 64 * 1024


class LogOptionsError(HatchwayError, ValueError):
    """A log query the node cannot answer; the message is the 400 text.

    Still a ``ValueError`` (it was one before it joined the tree), so a caller catching
    ``ValueError`` around option parsing behaves as before."""


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    #: Only output written at or after this time (seconds since the epoch).
    since: float | None = None


def _bool(query: dict[str, list[str]], name: str) -> bool:
    values = query.get(name)
    return bool(values) and values[0].lower() not in ("", "0", "false")


def _int(query: dict[str, list[str]], name: str, minimum: int) -> int | None:
    values = query.get(name)
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        raise LogOptionsError(f"{name}: invalid integer {values[0]!r}") from None
    if value < minimum:
        raise LogOptionsError(f"{name}: must be greater than or equal to {minimum}")
    return value


def _time(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise LogOptionsError(f"sinceTime: invalid RFC 3339 time {text!r}") from None


def parse_log_options(query: dict[str, list[str]], now: float) -> LogOptions:
    """The options of a ``containerLogs`` query; ``now`` anchors ``sinceSeconds``."""
    if _bool(query, "timestamps"):
        raise LogOptionsError(
            "timestamps are not available: this node keeps container logs without them"
        )
    since_seconds = _int(query, "sinceSeconds", 1)
    since_time = (query.get("sinceTime") or [""])[0]
    if since_seconds is not None and since_time:
        raise LogOptionsError("at most one of sinceTime or sinceSeconds may be specified")
    since = now - since_seconds if since_seconds is not None else None
    if since_time:
        since = _time(since_time)
    return LogOptions(
        follow=_bool(query, "follow"),
        tail_lines=_int(query, "tailLines", 0),
        limit_bytes=_int(query, "limitBytes", 1),
        since=since,
    )


def tail_offset(f: BinaryIO, lines: int) -> int:
    """Where the last ``lines`` lines of ``f`` begin (a last line without a newline
    counts as a line), reading backwards in blocks."""
    end = f.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    pos = end
    wanted = lines + 1  # the newline before the first wanted line
    first = True
    while pos > 0:
        start = max(0, pos - _BLOCK)
        f.seek(start)
        block = f.read(pos - start)
        if first and block.endswith(b"\n"):
            block = block[:-1]  # the last line's own newline
        first = False
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            wanted -= 1
            if wanted == 1:
                return start + index + 1
        pos = start
    return 0

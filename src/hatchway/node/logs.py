"""Container log options (the kubelet's ``containerLogs`` query) and reading a CRI log.

The shim (:mod:`~hatchway.node.runtime_shim`) keeps each container's output in the CRI
log format (protocol.md 9.1): ``TIME STREAM TAG CONTENT`` per record, ``F`` for a whole
line, ``P`` for a piece of a longer one. Reading follows the kubelet
(``pkg/kubelet/kuberuntime/logs``, protocol.md 9.2): ``tailLines`` counts records from
the end of the file, ``sinceSeconds``/``sinceTime`` skip records older than the time,
``timestamps`` puts each record's time before its content, ``limitBytes`` bounds what is
sent, and an ``F`` record's content gets its newline back. A line that is not a CRI record (a log
written by an earlier version, as raw bytes) is passed on as it is.
"""

from __future__ import annotations

import asyncio
import calendar
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, NamedTuple

from hatchway.errors import HatchwayError

_BLOCK = 64 * 1024


class LogOptionsError(HatchwayError, ValueError):
    """A log query the node cannot answer; the message is the 400 text.

    Still a ``ValueError`` (it was one before it joined the tree), so a caller catching
    ``ValueError`` around option parsing behaves as before."""


class LogUnavailableError(HatchwayError):
    """The container has no log to give (yet, or no previous instance); the message is
    the kubelet's 400 text (``validateContainerLogStatus``)."""


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    #: Only output written at or after this time (seconds since the epoch).
    since: float | None = None
    timestamps: bool = False
    #: The previous instance's log (kept across one restart).
    previous: bool = False


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
        timestamps=_bool(query, "timestamps"),
        previous=_bool(query, "previous"),
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


# --- the CRI log format (protocol.md 9.1) -----------------------------------------------


class CriRecord(NamedTuple):
    time: bytes  # as written: RFC 3339, nanoseconds, UTC
    stream: bytes  # b"stdout" | b"stderr"
    partial: bool  # tag P: the line goes on in the next record
    content: bytes


def parse_cri(line: bytes) -> CriRecord | None:
    """One record (without its newline); None when ``line`` is not one."""
    parts = line.split(b" ", 3)
    if len(parts) == 3 and parts[2] in (b"F", b"P"):
        parts.append(b"")  # an empty line: "TIME stdout F"
    if len(parts) != 4 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    if len(parts[0]) < 20 or parts[0][4:5] != b"-" or parts[0][10:11] != b"T":
        return None
    return CriRecord(parts[0], parts[1], parts[2] == b"P", parts[3])


_epoch_cache: dict[bytes, int] = {}


def cri_seconds(stamp: bytes) -> float:
    """Seconds since the epoch of a record's time (``2026-12-04T18:22:20.123456789Z``)."""
    head = stamp[:19]
    whole = _epoch_cache.get(head)
    if whole is None:
        whole = calendar.timegm(time.strptime(head.decode(), "%Y-%m-%dT%H:%M:%S"))
        if len(_epoch_cache) > 4096:
            _epoch_cache.clear()
        _epoch_cache[head] = whole
    frac = stamp[19:].rstrip(b"Z")
    return whole + (float(b"0" + frac) if frac.startswith(b".") else 0.0)


def render(line: bytes, options: LogOptions) -> bytes:
    """What the client gets for one line of the log file (b"" when ``since`` skips it)."""
    record = parse_cri(line)
    if record is None:
        return line + b"\n"
    if options.since is not None and cri_seconds(record.time) < options.since:
        return b""
    out = record.content if record.partial else record.content + b"\n"
    return record.time + b" " + out if options.timestamps else out


async def read_log(
    f: BinaryIO,
    options: LogOptions,
    ended: Callable[[], bool],
    *,
    chunk: int = _BLOCK,
    poll: float = 0.1,
) -> AsyncIterator[bytes]:
    """The client's view of the CRI log ``f``; with ``follow``, until ``ended()``
    (the container is gone) and the file is read to its end."""
    if options.tail_lines is not None:
        f.seek(tail_offset(f, options.tail_lines))
    left = options.limit_bytes if options.limit_bytes is not None else -1
    pending = b""
    final = not options.follow
    while left != 0:
        data = f.read(chunk)
        if not data:
            if final:
                break
            if ended():
                final = True  # the shim wrote the exit status after the log: read on
            else:
                await asyncio.sleep(poll)
            continue
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        out = b"".join(render(line, options) for line in lines)
        if left >= 0:
            out = out[:left]
            left -= len(out)
        if out:
            yield out
    if pending and left != 0:
        out = render(pending, options)  # (a record being written; raw bytes as they are)
        yield out[:left] if left >= 0 else out

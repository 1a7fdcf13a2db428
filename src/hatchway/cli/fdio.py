"""Writing to a descriptor that may be non-blocking (a terminal another program set so):
all of it, waiting with ``select`` when it is full. Shared by both exec paths."""

from __future__ import annotations

import os
import select


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``."""
    write_views(fd, [data])


def write_views(fd: int, parts: list[bytes | memoryview]) -> None:
    """All of ``parts`` to ``fd``, in as few ``writev`` calls as it takes."""
    while parts:
        try:
            n = os.writev(fd, parts)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        while parts and n >= len(parts[0]):
            n -= len(parts.pop(0))
        if n:
            parts[0] = memoryview(parts[0])[n:]

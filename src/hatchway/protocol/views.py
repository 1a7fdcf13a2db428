"""Received bytes kept as the views they arrived in, for the frame parsers: taking a
frame's bytes slices the views instead of copying them into one buffer."""

from __future__ import annotations

from typing import TypeVar

B = TypeVar("B", bytes, memoryview, bytes | memoryview)


def take_views(pending: list[B], n: int) -> list[B]:
    """Remove and return the first ``n`` bytes of ``pending`` (which must hold at least
    ``n``), as views; a view that straddles the cut is split."""
    out: list[B] = []
    while n:
        view = pending[0]
        if len(view) <= n:
            out.append(view)
            del pending[0]
            n -= len(view)
        else:
            out.append(view[:n])
            pending[0] = view[n:]
            n = 0
    return out

"""A stream's receive buffer: received buffers queued as they came, read out as bytes.

The drivers queue payloads as views of the chunks the socket delivered (no copy on
receipt); :meth:`ChunkQueue.take` makes the one copy a reader's ``bytes`` needs, and
joins consecutive views so that one read returns up to what was asked for. Queued
``bytes`` are already copies of their own and come back without another.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

Buffer = bytes | memoryview


class ChunkQueue:
    """Buffers in order; :attr:`size` counts the bytes not yet taken."""

    __slots__ = ("_chunks", "_offset", "size")

    def __init__(self) -> None:
        self._chunks: collections.deque[Buffer] = collections.deque()
        self._offset = 0  # consumed bytes of self._chunks[0]
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def append(self, data: Buffer) -> None:
        if data:
            self._chunks.append(data)
            self.size += len(data)

    def extend(self, parts: Iterable[Buffer], size: int) -> None:
        """Queue ``parts`` (non-empty buffers) totalling ``size`` bytes."""
        self._chunks.extend(parts)
        self.size += size

    def clear(self) -> None:
        self._chunks.clear()
        self._offset = self.size = 0

    def take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` (at least 1) of the queued bytes; ``b""`` when empty."""
        chunks = self._chunks
        if not chunks:
            return b""
        head, off = chunks[0], self._offset
        avail = len(head) - off
        if avail >= max_bytes or len(chunks) == 1 or isinstance(head, bytes):
            if off == 0 and avail <= max_bytes and isinstance(head, bytes):
                chunks.popleft()
                data = head
            else:
                end = off + min(avail, max_bytes)
                data = bytes(head[off:end])
                if end == len(head):
                    chunks.popleft()
                    end = 0
                self._offset = end
        else:
            data = b"".join(self._views(max_bytes, stop_at_bytes=True)[0])
        self.size -= len(data)
        return data

    def take_views(self, max_bytes: int) -> list[Buffer]:
        """Up to ``max_bytes`` (at least 1) of the queued bytes as the buffers they are
        queued in -- views, not copies -- for a writer that takes several at once
        (``os.writev``); ``[]`` when empty. The buffers are read-only (received
        ``bytes`` or views of them), so they may be kept."""
        parts, taken = self._views(max_bytes, stop_at_bytes=False)
        self.size -= taken
        return parts

    def _views(self, max_bytes: int, *, stop_at_bytes: bool) -> tuple[list[Buffer], int]:
        """Dequeue up to ``max_bytes`` as views of the queued buffers, and how many bytes
        they hold (:attr:`size` is the caller's to update). With ``stop_at_bytes`` the walk
        ends before a queued ``bytes`` that is not the first part: it is already a copy of
        its own, and the next read returns it as it is."""
        chunks, off, want = self._chunks, self._offset, max_bytes
        parts: list[Buffer] = []
        while chunks and want:
            head = chunks[0]
            if stop_at_bytes and parts and isinstance(head, bytes):
                break
            avail = len(head) - off
            if avail <= want:
                parts.append(memoryview(head)[off:] if off else head)
                chunks.popleft()
                off = 0
                want -= avail
            else:
                parts.append(memoryview(head)[off : off + want])
                off += want
                want = 0
        self._offset = off
        return parts, max_bytes - want

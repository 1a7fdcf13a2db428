"""The receive side both drivers' streams share: a bounded buffer and the reader's gate.

A driver's reader task feeds each stream what the socket delivered
(:meth:`BufferedStream.feed`), ends it (:meth:`BufferedStream.feed_eof`) or drops it
(:meth:`BufferedStream.abort`); the stream's consumer reads it out with
:meth:`BufferedStream.read`. Backpressure (protocol.md 3.6 for SPDY, 5.3 for WebSocket):
one :class:`ReceiveGate` per connection counts the streams holding ``>= high`` unread
bytes; while any does the reader reads no more from the socket
(:meth:`ReceiveGate.wait_open`), and it reads again once every one of them is down to
``<= low``, so a slow consumer slows the peer through TCP.

What an idle stream does not use is not allocated: the chunk queue appears with the
first bytes, the read waiter with the first read that has to wait, the gate's event with
the first pause -- an idle exec session has four or five streams a side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from hatchway.transport.base import Sink, Stream
from hatchway.transport.chunks import Buffer, ChunkQueue

if TYPE_CHECKING:
    from hatchway.transport.bytestream import ByteStream


class ReceiveGate:
    """Whether a connection's reader may read the socket: not while any of its streams
    holds ``high`` or more unread bytes; again once each of those is down to ``low``."""

    __slots__ = ("_closed", "_open", "_over", "high", "low")

    def __init__(self, high: int, low: int | None = None) -> None:
        if high < 1:
            raise ValueError(f"a receive buffer bound must be positive, not {high}")
        self.high = high
        self.low = high // 4 if low is None else low
        self._over = 0  # streams at or above high, not yet back to low
        self._closed = False
        self._open: asyncio.Event | None = None  # set while not paused; made by wait_open

    @property
    def paused(self) -> bool:
        """Some stream is full: the reader must not read."""
        return self._over > 0 and not self._closed

    def close(self) -> None:
        """The connection ended: the gate stays open and a waiting reader goes on."""
        self._closed = True
        if self._open is not None:
            self._open.set()

    async def wait_open(self, watch: ByteStream | None = None) -> bool:
        """Return once the reader may read again: True. With ``watch`` (the serving
        side), False as soon as its peer ended the connection instead: a reader that
        stopped reading would never see it go, and a session blocked both ways would
        wait for ever (:func:`.drain.wait_unless_ended`)."""
        if not self.paused:
            return True
        if self._open is None:
            self._open = asyncio.Event()
        self._open.clear()
        if watch is None:  # our consumer is slow: what is queued is still ours
            await self._open.wait()
            return True
        return await watch.wait_unless_ended(self._open)

    def _pause(self) -> None:
        self._over += 1

    def _resume(self) -> None:
        self._over -= 1
        if not self._over and self._open is not None:
            self._open.set()


class BufferedStream(Stream):
    """A :class:`~.base.Stream` whose received bytes wait in a bounded buffer.

    ``read`` returns ``b""`` only at EOF (:meth:`feed_eof`, :meth:`abort`) once the
    buffer is empty; bytes fed after EOF are dropped (nothing reads them)."""

    def __init__(self, gate: ReceiveGate, headers: Mapping[str, str]) -> None:
        self._gate = gate
        self._headers = dict(headers)
        self._queue: ChunkQueue | None = None
        self._eof = False
        self._over = False  # counted in the gate
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Sink | None = None

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def buffered(self) -> int:
        """Received bytes not yet read."""
        queue = self._queue
        return queue.size if queue is not None else 0

    @property
    def at_eof(self) -> bool:
        """EOF was fed and everything before it has been read."""
        return self._eof and not self._queue

    async def read(self, max_bytes: int = 65536) -> bytes:
        queue = await self._readable()
        if queue is None:
            return b""
        data = queue.take(max_bytes)
        if self._over and queue.size <= self._gate.low:
            self._release()
        return data

    async def read_views(self, max_bytes: int = 1 << 20) -> list[Buffer]:
        """Like :meth:`read`, but the bytes as the buffers they were received in (no
        copy; ``ChunkQueue.take_views``), ``[]`` at EOF: for ``os.writev``."""
        queue = await self._readable()
        if queue is None:
            return []
        parts = queue.take_views(max_bytes)
        if self._over and queue.size <= self._gate.low:
            self._release()
        return parts

    async def _readable(self) -> ChunkQueue | None:
        """The queue once it holds something; None at EOF."""
        while not self._queue:
            if self._eof:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue

    # -- called by the driver's reader ----------------------------------------------------
    def feed(self, data: Buffer) -> None:
        """Queue ``data`` (a view is kept, not copied) and wake the reader."""
        self.feed_parts((data,), len(data))

    def feed_parts(self, parts: Iterable[Buffer], size: int) -> None:
        """Queue ``parts`` (non-empty buffers) totalling ``size`` bytes."""
        if self._eof or not size:
            return
        queue = self._queue
        if self._sink is not None and not queue:
            # Nothing is waiting to be read before these: they may go straight on.
            parts = parts if isinstance(parts, list | tuple) else list(parts)
            taken = self._sink(parts)
            if taken >= size:
                return
            parts, size = _after(parts, taken), size - taken
        if queue is None:
            queue = self._queue = ChunkQueue()
        queue.extend(parts, size)
        if not self._over and queue.size >= self._gate.high:
            self._over = True
            self._gate._pause()
        self._wake()

    def set_sink(self, sink: Sink | None) -> bool:
        """See :meth:`.base.Stream.set_sink`: only what arrives while the queue is empty
        goes to the sink, so the bytes stay in order."""
        self._sink = sink
        return True

    def feed_eof(self, fin: bool = False) -> None:
        """No more bytes come; ``fin``: because the peer half-closed on purpose
        (:attr:`~.base.Stream.fin_received`, set only for the first ending)."""
        if fin and not self._eof:
            self.fin_received = True
        self._eof = True
        self._wake()

    def abort(self) -> None:
        """Receive side only: drop what is buffered, give the gate back its room, and
        end the reader with EOF."""
        if self._queue is not None:
            self._queue.clear()
        self._release()
        self._eof = True
        self._wake()

    def _release(self) -> None:
        if self._over:
            self._over = False
            self._gate._resume()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _after(parts: Sequence[Buffer], n: int) -> list[Buffer]:
    """``parts`` without their first ``n`` bytes."""
    rest: list[Buffer] = []
    for part in parts:
        if n >= len(part):
            n -= len(part)
            continue
        rest.append(memoryview(part)[n:] if n else part)
        n = 0
    return rest


__all__ = ["BufferedStream", "ReceiveGate"]

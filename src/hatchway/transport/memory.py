"""A connected pair of in-memory byte transports with fault injection, for tests.

:class:`MemoryPipe` joins two ends, ``a`` and ``b``, each an :class:`asyncio.Transport`
that drives the protocol above it through the same callbacks a socket transport makes
(``get_buffer``/``buffer_updated`` or ``data_received``, ``eof_received``,
``connection_lost``, ``pause_writing``/``resume_writing``), so a
:class:`~hatchway.transport.bytestream.ByteStream` -- and every driver above it -- runs
over it unchanged (:meth:`MemoryPipe.streams`). Nothing is a socket: no port, no kernel
buffer, no TCP_INFO (the drain watch falls back to our send buffer shrinking).

It behaves as TCP does where the session layer can tell:

* **Backpressure.** A receiver that pauses reading (its buffer bound) stops delivery;
  what its peer writes then queues on the peer's end, the first :attr:`Direction.window`
  bytes of it as if in the kernel's buffers, the rest counted by
  ``get_write_buffer_size()``, and above the high watermark the writer's protocol is
  paused (``ByteStream.drain()`` waits) until the receiver reads again.
* **Half-close and close.** ``write_eof()`` sends an EOF behind the data
  (``eof_received``; a protocol that answers False has its transport closed, as asyncio
  does). ``close()`` does the same and ends this side (``connection_lost(None)``) once
  what it queued is handed over, which takes as long as the peer reads. Bytes sent to
  a side that is gone, or in flight to it when it went, reset their sender
  (``connection_lost`` with :class:`ConnectionResetError`) once what was in flight to
  the sender has been delivered.
* **Abort.** ``abort()`` drops what is queued both ways and resets the peer at once,
  paused reader or not (as the kernel would tell it, :func:`.drain.peer_ended`).

Faults, per :class:`Direction` (``pipe.a_to_b``, ``pipe.b_to_a``), set before or during
the exchange: ``delay`` (each write arrives that much later), ``trickle`` and ``tick``
(at most ``trickle`` bytes per delivery, one delivery per ``tick`` seconds), and
``cut_after`` (the link is cut once that many bytes crossed: both ends reset, or with
``cut_one_way`` only the receiver, and the sender finds out as over TCP, from the reset
that answers its bytes: at once for those in flight, else at its next write; an idle
sender of a half-open connection knows nothing). :meth:`MemoryPipe.cut` cuts on demand.
Every byte a fault dropped is counted in :attr:`Direction.dropped`, none silently.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable
from typing import Any

from hatchway.transport.bytestream import ByteStream

#: Bytes a direction holds for the receiver outside the sender's write buffer (what the
#: kernels' socket buffers would hold); only beyond it does the writer see backpressure.
WINDOW = 256 * 1024
#: asyncio's default write buffer watermarks (a protocol usually sets its own).
HIGH = 64 * 1024
#: The largest piece handed to the receiver in one callback (a socket read's size).
PIECE = 256 * 1024

_ids = itertools.count(1)


class Direction:
    """One way of a :class:`MemoryPipe`: its faults, and what crossed it."""

    def __init__(self, name: str, window: int = WINDOW) -> None:
        self.name = name
        #: Seconds each write takes to arrive.
        self.delay = 0.0
        #: At most this many bytes per delivery (0: no limit).
        self.trickle = 0
        #: Seconds between trickled deliveries (0: the next turn of the event loop).
        self.tick = 0.0
        #: Cut the link once this many bytes have been delivered this way.
        self.cut_after: int | None = None
        #: Whether :attr:`cut_after` resets only the receiver (a half-open connection).
        self.cut_one_way = False
        self.window = window
        #: Bytes handed to the receiver, and bytes a cut or a closed receiver dropped.
        self.delivered = 0
        self.dropped = 0
        #: The receiver saw the EOF (our half-close or close).
        self.eof_delivered = False
        self._queue: collections.deque[tuple[float, memoryview]] = collections.deque()
        self.queued = 0
        self._last_due = 0.0
        self._next_at = 0.0  # a trickle's next delivery, in loop time
        self._fin = False

    def __repr__(self) -> str:
        return (
            f"<Direction {self.name} delivered={self.delivered} queued={self.queued} "
            f"dropped={self.dropped}>"
        )

    def _push(self, data: bytes, now: float) -> None:
        due = max(now + self.delay, self._last_due)
        self._last_due = due
        self._queue.append((due, memoryview(data)))
        self.queued += len(data)

    def _drop(self) -> None:
        self.dropped += self.queued
        self._queue.clear()
        self.queued = 0


class MemoryTransport(asyncio.Transport):
    """One end of a :class:`MemoryPipe`."""

    def __init__(self, pipe: MemoryPipe, side: int, name: str) -> None:
        super().__init__({"peername": ("memory", name), "sockname": ("memory", name)})
        self._pipe = pipe
        self._side = side
        self._protocol: asyncio.BaseProtocol | None = None
        self._closing = False
        self._lost = False
        self._reading = True
        self._write_paused = False
        self._high = HIGH
        self._low = HIGH // 4
        self._reset_pending = False
        self._eof_written = False

    # -- what the pipe uses ---------------------------------------------------------------
    @property
    def out(self) -> Direction:
        return self._pipe.directions[self._side]

    @property
    def into(self) -> Direction:
        return self._pipe.directions[1 - self._side]

    @property
    def peer(self) -> MemoryTransport:
        return self._pipe.ends[1 - self._side]

    @property
    def lost(self) -> bool:
        return self._lost

    def _connect(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        protocol.connection_made(self)

    def _lose(self, exc: Exception | None) -> None:
        """This side ends now; its protocol hears of it on the next turn of the loop
        (``connection_lost``, its last callback), as from asyncio's transports."""
        if self._lost:
            return
        self._lost = self._closing = True
        if self.into.queued:
            # Bytes in flight to a socket that is gone: TCP resets their sender.
            self.into._drop()
            self.peer._reset_pending = True
            self._pipe._schedule(self._side)
        protocol = self._protocol
        if protocol is not None:
            self._pipe._loop.call_soon(protocol.connection_lost, exc)

    def _update_write_state(self) -> None:
        protocol = self._protocol
        if protocol is None or self._lost:
            return
        size = self.get_write_buffer_size()
        if not self._write_paused and size > self._high:
            self._write_paused = True
            protocol.pause_writing()
        elif self._write_paused and size <= self._low:
            self._write_paused = False
            protocol.resume_writing()

    # -- asyncio.Transport ----------------------------------------------------------------
    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._lost

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._pipe._schedule(1 - self._side)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        self._high, self._low = high, low
        self._update_write_state()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        """What we queued beyond the direction's window (the kernel's share)."""
        return max(0, self.out.queued - self.out.window)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._lost:
            # asyncio drops what is written to a lost transport; we count it.
            self.out.dropped += len(data)
            return
        self._pipe._send(self._side, bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        self.out._fin = True
        self._pipe._schedule(self._side)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.out._fin = True
        self._pipe._schedule(self._side)

    def abort(self) -> None:
        self._pipe._abort(self._side)


class MemoryPipe:
    """Two connected in-memory transports, ``a`` and ``b`` (``ends``), and the two
    directions between them, ``a_to_b`` and ``b_to_a`` (``directions``), which carry the
    faults."""

    def __init__(self, *, window: int = WINDOW) -> None:
        self._loop = asyncio.get_running_loop()
        number = next(_ids)
        self.a_to_b = Direction(f"a->b#{number}", window)
        self.b_to_a = Direction(f"b->a#{number}", window)
        self.directions = (self.a_to_b, self.b_to_a)
        self.a = MemoryTransport(self, 0, f"a#{number}")
        self.b = MemoryTransport(self, 1, f"b#{number}")
        self.ends = (self.a, self.b)
        self._handles: list[asyncio.Handle | None] = [None, None]

    # -- construction ---------------------------------------------------------------------
    def connect(
        self, a: asyncio.BaseProtocol, b: asyncio.BaseProtocol
    ) -> tuple[MemoryTransport, MemoryTransport]:
        """Attach a protocol to each end (``connection_made``, ``a`` first)."""
        self.a._connect(a)
        self.b._connect(b)
        return self.a, self.b

    def streams(self) -> tuple[ByteStream, ByteStream]:
        """A :class:`ByteStream` on each end, ``a`` first."""
        first = ByteStream.over(self.a._connect)
        return first, ByteStream.over(self.b._connect)

    # -- faults ---------------------------------------------------------------------------
    def cut(self, direction: Direction | None = None) -> None:
        """Cut the link now: without ``direction`` both ends are reset; with one, only
        its receiver is (the sender finds out from the reset its bytes get, at once for
        those in flight, else at its next write)."""
        if direction is None:
            for side in (0, 1):
                self.directions[side]._drop()
            for end in self.ends:
                end._lose(ConnectionResetError("connection cut"))
            return
        side = self.directions.index(direction)
        self.ends[1 - side]._lose(ConnectionResetError("connection cut"))

    def settled(self) -> bool:
        """Nothing is queued either way."""
        return not any(d.queued for d in self.directions)

    # -- moving bytes -----------------------------------------------------------------------
    def _send(self, side: int, data: bytes) -> None:
        direction, receiver = self.directions[side], self.ends[1 - side]
        if receiver.lost:
            # TCP answers bytes for a closed socket with a reset.
            direction.dropped += len(data)
            sender = self.ends[side]
            sender._reset_pending = True
            self._schedule(1 - side)
            return
        direction._push(data, self._loop.time())
        self.ends[side]._update_write_state()
        self._schedule(side)

    def _schedule(self, side: int, when: float | None = None) -> None:
        """Run the delivery of ``directions[side]`` soon (or at loop time ``when``)."""
        handle = self._handles[side]
        if handle is not None:
            if not isinstance(handle, asyncio.TimerHandle):
                return  # it runs soon anyway, and reschedules itself as needed
            if when is not None and handle.when() <= when:
                return
            handle.cancel()
        if when is None:
            self._handles[side] = self._loop.call_soon(self._deliver, side)
        else:
            self._handles[side] = self._loop.call_at(when, self._deliver, side)

    def _deliver(self, side: int) -> None:
        """Move what is due in ``directions[side]``, then what follows the data."""
        self._handles[side] = None
        direction, receiver = self.directions[side], self.ends[1 - side]
        if receiver.lost:
            direction._drop()
        else:
            now = self._loop.time()
            if direction.trickle and direction._queue and now < direction._next_at:
                self._schedule(side, direction._next_at)
                return
            moved = self._move(side, now)
            if moved is None:
                return  # cut
            if direction.trickle and moved:
                direction._next_at = now + direction.tick
                if direction._queue and receiver.is_reading():
                    self._schedule(side, max(direction._queue[0][0], direction._next_at))
            self.ends[side]._update_write_state()
        self._after_delivery(side)

    def _move(self, side: int, now: float) -> int | None:
        """Hand the receiver what is due, within the trickle's budget, while it reads:
        the bytes moved, None once :attr:`Direction.cut_after` cut the link."""
        direction, receiver = self.directions[side], self.ends[1 - side]
        budget = direction.trickle or -1
        moved = 0
        while direction._queue and receiver.is_reading() and budget:
            due, view = direction._queue[0]
            if due > now:
                self._schedule(side, due)
                break
            n = len(view) if budget < 0 else min(len(view), budget)
            if direction.cut_after is not None:
                n = min(n, direction.cut_after - direction.delivered)
            n = self._hand(receiver, view[:n])
            direction.delivered += n
            direction.queued -= n
            moved += n
            budget = budget - n if budget > 0 else budget
            if n == len(view):
                direction._queue.popleft()
            else:
                direction._queue[0] = (due, view[n:])
            if direction.cut_after is not None and direction.delivered >= direction.cut_after:
                direction.cut_after = None
                self.cut(direction if direction.cut_one_way else None)
                return None
            if receiver.lost:
                direction._drop()
                break
        return moved

    def _hand(self, receiver: MemoryTransport, view: memoryview) -> int:
        """Give ``view`` to the receiver's protocol, as far as it keeps reading."""
        protocol = receiver._protocol
        done = 0
        while done < len(view) and receiver.is_reading():
            piece = view[done : done + PIECE]
            if isinstance(protocol, asyncio.BufferedProtocol):
                buf = protocol.get_buffer(len(piece))
                k = min(len(buf), len(piece))
                if not k:
                    raise RuntimeError("get_buffer() returned an empty buffer")  # as asyncio
                buf[:k] = piece[:k]
                done += k
                protocol.buffer_updated(k)
            else:
                assert isinstance(protocol, asyncio.Protocol)
                done += len(piece)
                protocol.data_received(bytes(piece))
        return done

    def _after_delivery(self, side: int) -> None:
        """What follows the data once it is all delivered: the EOF, the end of a
        closed sender, a reset owed to the receiver."""
        direction = self.directions[side]
        sender, receiver = self.ends[side], self.ends[1 - side]
        if sender._closing and not sender.lost and sender.get_write_buffer_size() == 0:
            sender._lose(None)
        if direction.queued:
            return
        if direction._fin and not direction.eof_delivered and not receiver.lost:
            direction.eof_delivered = True
            protocol = receiver._protocol
            eof_received = getattr(protocol, "eof_received", None)
            keep_open = eof_received is not None and eof_received()
            if not keep_open:
                receiver.close()
        if receiver._reset_pending and not receiver.lost:
            receiver._lose(ConnectionResetError("connection reset by peer"))

    def _abort(self, side: int) -> None:
        for direction in self.directions:
            direction._drop()
        self.ends[side]._lose(None)
        self.ends[1 - side]._lose(ConnectionResetError("connection reset by peer"))


def stream_pair(
    configure: Callable[[MemoryPipe], None] | None = None,
) -> tuple[MemoryPipe, ByteStream, ByteStream]:
    """A new pipe (``configure`` sets its faults first) and a stream on each end."""
    pipe = MemoryPipe()
    if configure is not None:
        configure(pipe)
    a, b = pipe.streams()
    return pipe, a, b


__all__ = ["Direction", "MemoryPipe", "MemoryTransport", "stream_pair"]

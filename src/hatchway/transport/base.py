"""The one Connection/Stream interface that the SPDY and WebSocket drivers implement.

A *connection* is an upgraded HTTP connection carrying several *streams*. A stream is
named by its ``streamtype`` header (``error``, ``stdin``, ``stdout``, ``stderr``,
``resize``): over SPDY it is a SPDY stream; over WebSocket it is a channel of the
negotiated channel protocol.

Rules every driver keeps:

* ``read()`` returns at most ``max_bytes``; ``b""`` means the peer half-closed (or reset,
  or the connection ended) -- EOF. It never returns ``b""`` otherwise. ``fin_received``
  tells the first apart from the others: it is set, before the reader is woken, only for
  the peer's deliberate half-close (SPDY FIN; WebSocket v5 close signal), so an EOF that a
  lost connection caused is never taken for a client's end of input.
* ``write()`` returns once the bytes are handed to the connection; it waits while the
  connection's send buffer is above its high watermark (backpressure), and raises
  :class:`~hatchway.errors.ConnectionClosedError` when the stream or connection is gone.
* Receive buffers are bounded per stream: when one is full the driver stops reading the
  socket until the consumer catches up, so a slow reader slows the peer through TCP.
* ``write_eof()`` half-closes our side (SPDY FIN; WebSocket v5 close signal for stdin;
  a no-op where the protocol has no half-close).

The serving side of a session never asks which transport it has: it gets its streams
with :meth:`Connection.accept_streams` (SPDY: the client's SYN_STREAMs; WebSocket: the
channels, then the server's one empty message), writes, and ends with
:meth:`Connection.finish_output` and :meth:`Connection.close` (SPDY: FIN on each output
stream, then wait for the client to hang up while it reads; WebSocket: the close
handshake).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence

#: A receiver of stream data called from the driver (:meth:`Stream.set_sink`): it gets
#: the received buffers (read-only, valid only during the call) and returns how many of
#: their bytes it took; the rest is queued.
Sink = Callable[[Sequence[bytes | memoryview]], int]


class Stream(abc.ABC):
    """One bidirectional stream of a :class:`Connection`."""

    @property
    @abc.abstractmethod
    def headers(self) -> Mapping[str, str]:
        """Headers the stream was opened with (lower-case names)."""

    #: The peer half-closed this stream on purpose (SPDY FIN, WebSocket v5 close signal);
    #: False for an EOF from a reset or the end of the connection.
    fin_received: bool = False

    @property
    def name(self) -> str:
        """The ``streamtype`` of the stream: ``stdin``, ``stdout``, ``error``, ..."""
        return self.headers.get("streamtype", "")

    @abc.abstractmethod
    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` at EOF."""

    @abc.abstractmethod
    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, waiting while the connection's buffers are full."""

    #: Whether :meth:`write_nowait` and :meth:`drain` are there (both drivers' streams).
    writes_nowait: bool = False

    def write_nowait(self, data: bytes) -> bool:
        """Hand ``data`` to the connection now, from a callback, never waiting: whether
        the connection's send buffer has room for more (False: ``await drain()`` before
        the next write). Raises as :meth:`write` does."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Wait while the connection's send buffer is above its high watermark."""
        raise NotImplementedError

    def set_sink(self, sink: Sink | None) -> bool:
        """Receive side: hand what arrives while nothing is buffered to ``sink`` at once,
        from the driver's reader, instead of queueing it for :meth:`read`; what the sink
        does not take is queued as usual (None: queue everything again). False where
        the driver has no such path."""
        return False

    @abc.abstractmethod
    async def write_eof(self) -> None:
        """Half-close: we send nothing more on this stream."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Abort the stream in both directions (SPDY RST_STREAM CANCEL)."""

    async def read_all(self, limit: int = 1 << 20) -> bytes:
        """Everything until EOF, at most ``limit`` bytes (more is a ProtocolError)."""
        from hatchway.errors import LimitExceededError

        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                raise LimitExceededError(f"stream {self.name!r} sent more than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


class Connection(abc.ABC):
    """An upgraded connection carrying streams."""

    #: The negotiated subprotocol, e.g. ``v4.channel.k8s.io``.
    protocol: str = ""
    #: True once closing gave up on a peer that took none of our output for the drain
    #: idle timeout (what was still queued may not have reached it).
    cut: bool = False

    @abc.abstractmethod
    async def open_stream(self, headers: Mapping[str, str]) -> Stream:
        """Create a stream. Over SPDY this sends SYN_STREAM and waits for the SYN_REPLY;
        over WebSocket it materialises the channel named by ``streamtype``."""

    @abc.abstractmethod
    async def accept_stream(self) -> Stream:
        """The next stream the peer opened (SPDY). Raises ConnectionClosedError when
        the connection ends first."""

    def stop_accepting(self) -> None:  # noqa: B027  (a no-op unless the peer opens streams)
        """The peer may open no more streams: SPDY resets the ones not yet accepted and
        refuses later ones (RST_STREAM REFUSED_STREAM). WebSocket has none to refuse."""

    @abc.abstractmethod
    async def accept_streams(self, names: Sequence[str], *, timeout: float) -> dict[str, Stream]:
        """Serving side: the streams of a session, by type, once the peer may use them.

        SPDY: accepts the peer's streams (each replied to on arrival) until every type in
        ``names`` is there, resets any other (an unread stream would stay allocated, and
        could fill its buffer and stall the reader, until the end), then refuses more
        (:meth:`stop_accepting`). WebSocket: the channels exist at once; the server's one
        empty message goes out on the lowest output channel among them (protocol.md 5.3).
        Raises TimeoutError after ``timeout``, ConnectionClosedError when the connection
        ends first."""

    async def finish_output(self, streams: Iterable[Stream]) -> None:
        """Serving side, after the session's last write: half-close ``streams`` and
        wait until the peer can be let go without losing what it has not read yet;
        :meth:`close` then ends the connection. Here: the half-close only (WebSocket's
        close handshake does the waiting); SPDY also waits for the client to hang up.
        Raises ConnectionClosedError when the connection is gone."""
        for stream in streams:
            await stream.write_eof()

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what is queued, end the connection cleanly (SPDY GOAWAY, WebSocket close
        1000), and close the socket."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the connection at once."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether the connection has ended (set before any stream reads its EOF)."""

    @abc.abstractmethod
    async def wait_closed(self) -> None:
        """Return when the connection has ended, for whichever reason."""

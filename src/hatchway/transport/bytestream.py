"""A byte stream over an asyncio transport, with bounded buffers in both directions.

Built on :class:`asyncio.BufferedProtocol`, so the event loop reads straight into a
preallocated buffer (large reads, no StreamReader machinery). Everything above the
socket -- the HTTP layer, the SPDY and WebSocket drivers, the proxy splice -- reads and
writes through a :class:`ByteStream`. ``unread()`` pushes bytes back, which is how an
HTTP upgrade hands over what was read past the head.

:class:`Splice` joins two streams below that: what one transport delivers is written to
the other from the event loop's callback, with no task, queue or copy in between (the
API server's exec proxy).

Closing never cuts a peer that is still reading: :meth:`ByteStream.close` hands over
what is queued (TLS: then the closing handshake) and waits as long as the peer takes
some of it -- the kernel's count of bytes the peer acknowledged (``TCP_INFO``) is the
measure. Only a peer that takes nothing for ``drain_idle_timeout`` is cut, and the
stream says so (:attr:`ByteStream.cut`). The event loop's own TLS close deadline
(``ssl_shutdown_timeout``, 30 s by default, counted from ``close()`` however fast the
peer reads) is set out of the way, so that the progress watch is what decides.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl as ssl_module
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hatchway.errors import ConnectionClosedError
from hatchway.transport import drain

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
#: Receive buffer bound: above it we stop reading the socket.
RECV_HIGH = 1024 * 1024
RECV_LOW = 256 * 1024
#: Send buffer watermarks for the transport: ``drain()`` waits above HIGH.
SEND_HIGH = 1024 * 1024
SEND_LOW = 256 * 1024
#: Send watermarks of a spliced transport: above HIGH the other side stops reading.
SPLICE_SEND_HIGH = 256 * 1024
SPLICE_SEND_LOW = 64 * 1024
#: A closing stream whose peer takes none of its queued output for this long is cut
#: (the kubelet's --streaming-connection-idle-timeout; the API server passes its own
#: exec idle timeout). :attr:`ByteStream.drain_idle_timeout` per stream.
DRAIN_IDLE_TIMEOUT = 4 * 3600.0
#: The event loop's deadline for a whole TLS close (asyncio's and uvloop's
#: ``ssl_shutdown_timeout``): only a backstop far beyond any drain idle timeout, since it
#: would cut a reader that is still making progress.
TLS_SHUTDOWN_TIMEOUT = 7 * 24 * 3600.0
#: What a spliced TLS transport is given per write: its ciphertext comes back from the
#: memory BIO as one ``bytes`` of about this size, which then stays below the API
#: server's fixed mmap threshold (128 KiB, ``apiserver.server.fix_mmap_threshold``) and
#: so comes from the heap, not a fresh mapping faulted in page by page and unmapped
#: again at once (bench/README.md, "Where the CPU goes").
SPLICE_TLS_WRITE = 64 * 1024
#: SO_LINGER on, 0 s: close() resets the connection and drops the kernel's send queue.
_LINGER_RESET = struct.pack("ii", 1, 0)


class _SharedBuffer(threading.local):
    """One receive buffer per thread, shared by every connection of its event loop:
    the loop fills it and ``buffer_updated`` copies the bytes out before returning, so
    an idle connection costs no buffer at all (hundreds of idle exec sessions)."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(READ_CHUNK))


_shared = _SharedBuffer()


class _Protocol(asyncio.BufferedProtocol):
    def __init__(self, recv_high: int = RECV_HIGH) -> None:
        self.transport: asyncio.Transport | None = None
        self.tls = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.eof = False
        self.exc: BaseException | None = None
        self.recv_high = recv_high
        self.recv_low = max(recv_high // 4, 1)
        self._paused_reading = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Set by :meth:`Splice.start`: received bytes go to the other side at once.
        self.splice: Splice | None = None
        self.side = 0
        #: Set by :meth:`ByteStream.receive`: received bytes go to it while none are
        #: queued; it returns False to hand reading back to the awaiting task.
        self.receiver: Callable[[bytes], bool] | None = None
        self._receiving: asyncio.Future[bool] | None = None
        #: Set by :meth:`ByteStream.close`: what arrives from then on is discarded.
        self.closing = False
        self.discarded = 0

    # -- asyncio callbacks --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass: duck-type it.
        self.transport = transport  # type: ignore[assignment]
        # Decided now: at EOF a TLS transport may already have let go of its extras.
        self.tls = transport.get_extra_info("sslcontext") is not None
        transport.set_write_buffer_limits(high=SEND_HIGH, low=SEND_LOW)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.recv_high >= READ_CHUNK:
            return _shared.view
        # A small bound (an HTTP head not yet authenticated): read no more than it at
        # once either, or each connection could hold a whole READ_CHUNK regardless.
        return _shared.view[: self.recv_high]

    def buffer_updated(self, nbytes: int) -> None:
        if self.closing:
            # Read only so that the peer's closing handshake gets through (and no unread
            # data turns our close into a reset); nobody reads this stream any more.
            self.discarded += nbytes
            return
        if self.splice is not None:
            self.splice.forward(self.side, nbytes)
            return
        receiver = self.receiver
        if receiver is not None and not self.chunks:
            self._receive(receiver, bytes(_shared.view[:nbytes]))
            return
        self.chunks.append(bytes(_shared.view[:nbytes]))
        self.size += nbytes
        self._wake_reader()
        if self.size >= self.recv_high and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        if self.splice is not None:
            self.splice.eof(self.side)
        # Keep the transport open for writing (half-close); TLS cannot half-close.
        return not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.exc is None:
            self.exc = exc
        self._wake_reader()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        if self.splice is not None:
            self.splice.end(self.side)
        # The TLS transport refers to its protocol, which refers to this one: holding on
        # to it would leave the whole connection -- OpenSSL's ~30 KiB with it -- in a
        # reference cycle until the collector's next full pass, which a server with
        # long idle sessions rarely makes (issue 13). The ByteStream keeps its own
        # reference for as long as anyone uses it.
        self.transport = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.splice is not None:
            self.splice.throttle(1 - self.side, True)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.splice is not None:
            self.splice.throttle(1 - self.side, False)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- helpers for ByteStream ---------------------------------------------------------
    def _receive(self, receiver: Callable[[bytes], bool], data: bytes) -> None:
        done = self._receiving
        try:
            more = receiver(data)
        except Exception as exc:  # the awaiting task raises it
            self.receiver = None
            if done is not None and not done.done():
                done.set_exception(exc)
            return
        if not more:
            self.receiver = None
            if done is not None and not done.done():
                done.set_result(True)

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        done = self._receiving
        if done is not None and not done.done():  # EOF or the end: the task reads on
            self.receiver = None
            done.set_result(False)

    def consumed(self, nbytes: int) -> None:
        self.size -= nbytes
        if self._paused_reading and self.size <= self.recv_low and self.transport:
            self._paused_reading = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    async def wait_readable(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._read_waiter = waiter
        try:
            await waiter
        finally:
            self._read_waiter = None

    async def wait_writable(self) -> None:
        if not self._write_paused or self.closed.done():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter


class _ServerProtocol(_Protocol):
    """An accepted connection's protocol: tells its server once the transport is set up,
    so that the handler starts from ``connection_made`` (no task or queue between)."""

    def __init__(self, accepted: Callable[[asyncio.BaseTransport, _Protocol], None]) -> None:
        super().__init__()
        self._accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._accepted(transport, self)


class ByteStream:
    """A connected socket: ``read``/``unread``, ``write``/``drain``, half-close, close."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _Protocol,
        drain_idle_timeout: float = DRAIN_IDLE_TIMEOUT,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        #: How long a closing stream waits for a peer that takes none of its output.
        self.drain_idle_timeout = drain_idle_timeout
        #: True once a close gave up on the peer (no progress for the drain idle
        #: timeout, or the loop's TLS deadline) with its output perhaps undelivered.
        self.cut = False
        self._watching = False
        self._sock = transport.get_extra_info("socket")
        #: When the connection was made (``perf_counter_ns``; after a server's TLS
        #: handshake), where a timed first request's phases start (:mod:`.phases`).
        self.made_ns = time.perf_counter_ns()
        self.made_cpu_ns = time.thread_time_ns()

    # -- construction -------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float | None = 30.0,
    ) -> ByteStream:
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if ssl is not None:
            kwargs["ssl"] = ssl
            kwargs["server_hostname"] = server_hostname if server_hostname is not None else host
            kwargs["ssl_handshake_timeout"] = timeout
            kwargs["ssl_shutdown_timeout"] = TLS_SHUTDOWN_TIMEOUT
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(_Protocol, host, port, **kwargs)
        return cls(transport, protocol)  # type: ignore[arg-type]

    @classmethod
    def over(cls, attach: Callable[[asyncio.BufferedProtocol], object]) -> ByteStream:
        """A stream over a transport that is not a socket (:mod:`.memory`'s pairs):
        ``attach`` connects our protocol to it (``connection_made``)."""
        protocol = _Protocol()
        attach(protocol)
        assert protocol.transport is not None, "attach() must call connection_made()"
        return cls(protocol.transport, protocol)

    # -- reading ------------------------------------------------------------------------
    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` at EOF."""
        p = self._protocol
        while not p.chunks:
            if p.eof:
                return b""
            await p.wait_readable()
        chunk = p.chunks.popleft()
        if len(chunk) > max_bytes:
            p.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        p.consumed(len(chunk))
        return chunk

    async def receive(self, callback: Callable[[bytes], bool]) -> bool:
        """Hand what arrives to ``callback`` from the protocol's callback, in the loop
        iteration that read it, with no task wake-up per chunk, until ``callback``
        returns False (True is returned) or the stream reaches EOF or its end (False).
        False at once when bytes are queued or at EOF: :meth:`read` them first. What
        ``callback`` raises is raised here. Nothing is buffered meanwhile, so a callback
        that must not take more (a full consumer) returns False and the caller waits."""
        p = self._protocol
        if p.chunks or p.eof or p.closing or p.splice is not None:
            return False
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        p.receiver, p._receiving = callback, done
        try:
            return await done
        finally:
            p.receiver, p._receiving = None, None

    async def readexactly(self, n: int) -> bytes:
        parts = []
        while n > 0:
            chunk = await self.read(n)
            if not chunk:
                raise ConnectionClosedError("connection closed in the middle of a read")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def unread(self, data: bytes) -> None:
        """Push ``data`` back: the next ``read`` returns it first."""
        if data:
            self._protocol.chunks.appendleft(bytes(data))
            self._protocol.size += len(data)

    @property
    def at_eof(self) -> bool:
        return self._protocol.eof and not self._protocol.chunks

    @property
    def buffered(self) -> int:
        return self._protocol.size

    @property
    def write_blocked(self) -> bool:
        """The send buffer is above its high watermark (``drain()`` would wait)."""
        return self._protocol._write_paused and not self._protocol.closed.done()

    @property
    def write_buffered(self) -> int:
        """Bytes written and not yet handed to the kernel."""
        try:
            return self._transport.get_write_buffer_size()
        except AttributeError:  # asyncio's TLS transport, once closed twice
            return 0

    # -- writing ------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._transport.is_closing():
            raise ConnectionClosedError("connection is closed")
        self._transport.write(data)

    def writelines(self, parts: list[bytes | bytearray | memoryview]) -> None:
        if self._transport.is_closing():
            raise ConnectionClosedError("connection is closed")
        self._transport.writelines(parts)

    async def drain(self) -> None:
        """Wait until the send buffer is below its low watermark."""
        if self._protocol.closed.done() and self._protocol.exc is not None:
            raise ConnectionClosedError(str(self._protocol.exc))
        await self._protocol.wait_writable()

    def write_eof(self) -> None:
        if not self._transport.is_closing() and self._transport.can_write_eof():
            self._transport.write_eof()

    # -- closing ------------------------------------------------------------------------
    def close(self) -> None:
        """Close once everything queued is sent (TLS: and the closing handshake done),
        as long as the peer keeps taking it; a peer that takes nothing for
        ``drain_idle_timeout`` is cut (:attr:`cut`). What was received stays readable;
        what arrives from now on is read and discarded, so that the peer's half of the
        close gets through."""
        p = self._protocol
        if not p.closing:
            p.closing = True
            if not self._transport.is_closing():
                # Paused (our bound, or the splice's throttle), the TLS layer would never
                # see the peer's close_notify and the close would hang.
                self._transport.resume_reading()
        if not self._transport.is_closing():
            # Once only: asyncio's TLS transport forgets its protocol on a second close.
            self._transport.close()
        if not self._watching and not p.closed.done():
            self._watching = True
            self._watch(drain.Progress(self))

    def _watch(self, progress: drain.Progress) -> None:
        if self._protocol.closed.done():
            return
        stalled = progress.stalled()
        if stalled >= self.drain_idle_timeout:
            self.give_up(stalled)
            return
        delay = min(drain.POLL, self.drain_idle_timeout - stalled)
        asyncio.get_running_loop().call_later(delay, self._watch, progress)

    def give_up(self, stalled: float) -> None:
        """Cut a peer that took none of our output for ``stalled`` seconds: reset the
        connection, and say so (:attr:`cut`, a warning). A reset, not a close: the
        kernel would otherwise keep what is queued for a peer that does not read."""
        self.cut = True
        log.warning(
            "peer %s took none of the %d bytes still queued for %.0f s: connection cut",
            self.peername,
            self.unsent,
            stalled,
        )
        if self._sock is not None and self._sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError, AttributeError, ValueError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.abort()

    def abort(self) -> None:
        self._protocol.closing = True
        self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._protocol.closed)
        exc = self._protocol.exc
        if isinstance(exc, TimeoutError) and self._watching and not self.cut:
            # The loop's own TLS close deadline (TLS_SHUTDOWN_TIMEOUT) fired first.
            self.cut = True

    async def aclose(self, idle_timeout: float | None = None) -> bool:
        """:meth:`close` and wait until closed; whether the peer got everything (False:
        it took nothing for ``idle_timeout``, default :attr:`drain_idle_timeout`, and
        was cut)."""
        if idle_timeout is not None:
            self.drain_idle_timeout = idle_timeout
        self.close()
        await self.wait_closed()
        return not self.cut

    async def wait_draining(self, aw: Awaitable[object], settle: float | None = None) -> str:
        """Wait for ``aw`` for as long as the peer keeps taking what we sent; one that
        takes none of it for :attr:`drain_idle_timeout` is cut (:meth:`give_up`):
        ``"done"``, ``"delivered"`` or ``"cut"`` (:func:`.drain.wait_or_cut`)."""
        return await drain.wait_or_cut(self, aw, settle)

    async def wait_unless_ended(self, event: asyncio.Event) -> bool:
        """Wait for ``event`` (a reader's "buffers have room again"); False once the
        connection ended or the peer closed or reset it, which a reader that paused
        reading would otherwise never see (:func:`.drain.wait_unless_ended`; serving
        side only, see :func:`.drain.peer_ended`)."""
        return await drain.wait_unless_ended(self._sock, event, self._protocol.closed)

    @property
    def bytes_acked(self) -> int | None:
        """Bytes the peer's kernel acknowledged (``TCP_INFO``), None where unknown."""
        return drain.bytes_acked(self._sock)

    @property
    def unsent(self) -> int:
        """Bytes written and not yet acknowledged by the peer: our buffer and the kernel's
        send queue (as far as either is known)."""
        return self.write_buffered + drain.kernel_unsent(self._sock)

    @property
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    @property
    def peercert(self) -> dict[str, Any] | None:
        return self._transport.get_extra_info("peercert")

    @property
    def peername(self) -> Any:
        return self._transport.get_extra_info("peername")

    def set_recv_limit(self, high: int) -> None:
        self._protocol.recv_high = high
        self._protocol.recv_low = max(high // 4, 1)


class Splice:
    """Two streams joined at the protocol level, side 0 and side 1.

    Bytes a transport delivers are written to the other transport from the protocol
    callback (TLS transports encrypt them before ``write`` returns, so they get a view
    of the shared receive buffer; plain sockets get a copy). A full send buffer on one
    side pauses reading on the other until it drains. EOF is passed on as a half-close
    where both transports can carry one (plain TCP); otherwise, or when a connection is
    lost, the splice ends. The owner awaits :attr:`ended` (the side whose EOF or loss ended it)
    and closes both streams; ``sent[i]`` counts the bytes received from side ``i``."""

    def __init__(self, a: ByteStream, b: ByteStream) -> None:
        self._protocols = (a._protocol, b._protocol)
        self._transports = (a._transport, b._transport)
        self._copy = tuple(t.get_extra_info("ssl_object") is None for t in self._transports)
        self._eof = [False, False]
        self._paused = [False, False]
        self.sent = [0, 0]
        self.last_activity = time.monotonic()
        self.ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        """Hand over what the streams already buffered, then splice from the callbacks."""
        for transport in self._transports:
            transport.set_write_buffer_limits(high=SPLICE_SEND_HIGH, low=SPLICE_SEND_LOW)
        for side, protocol in enumerate(self._protocols):
            protocol.splice, protocol.side = self, side
            # The same deque, emptied: a new one per side would be ~0.8 KB more per session.
            pending = list(protocol.chunks)
            protocol.chunks.clear()
            protocol.size = 0
            for chunk in pending:
                self._write(1 - side, chunk)
                self.sent[side] += len(chunk)
            if protocol._paused_reading:
                protocol._paused_reading = False
                self._resume(side)
        for side, protocol in enumerate(self._protocols):
            if protocol.closed.done():
                self.end(side)
            elif protocol.eof:
                self.eof(side)

    def _write(self, side: int, data: bytes | memoryview) -> None:
        transport = self._transports[side]
        if not transport.is_closing():
            transport.write(data)

    def _resume(self, side: int) -> None:
        if not self._transports[side].is_closing():
            self._transports[side].resume_reading()

    # -- called by the protocols ----------------------------------------------------------
    def forward(self, side: int, nbytes: int) -> None:
        self.sent[side] += nbytes
        self.last_activity = time.monotonic()
        other = 1 - side
        view = _shared.view[:nbytes]
        if self._copy[other]:
            self._write(other, bytes(view))
            return
        for start in range(0, nbytes, SPLICE_TLS_WRITE):
            self._write(other, view[start : start + SPLICE_TLS_WRITE])

    def eof(self, side: int) -> None:
        self._eof[side] = True
        other = self._transports[1 - side]
        # A TLS transport closes itself after EOF: no half-close through it.
        half_close = self._copy[side] and other.can_write_eof() and not other.is_closing()
        if half_close:
            other.write_eof()
        if not half_close or self._eof[1 - side]:
            self.end(side)

    def end(self, side: int) -> None:
        if not self.ended.done():
            self.ended.set_result(side)

    def throttle(self, side: int, pause: bool) -> None:
        """Pause or resume reading ``side`` because the other side's buffer is full."""
        if pause == self._paused[side]:
            return
        self._paused[side] = pause
        if pause:
            if not self._transports[side].is_closing():
                self._transports[side].pause_reading()
        else:
            self._resume(side)


Handler = Callable[[ByteStream], Awaitable[None]]


class Server:
    """A listening socket that runs ``handler(stream)`` per connection, owning the tasks."""

    def __init__(self, handler: Handler, drain_idle_timeout: float = DRAIN_IDLE_TIMEOUT) -> None:
        self._handler = handler
        #: Each connection's :attr:`ByteStream.drain_idle_timeout` to begin with.
        self.drain_idle_timeout = drain_idle_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def _factory(self) -> _Protocol:
        return _ServerProtocol(self._accepted)

    def _accepted(self, transport: asyncio.BaseTransport, protocol: _Protocol) -> None:
        """A connection is made: its handler starts now, from the loop's callback."""
        task = asyncio.get_running_loop().create_task(
            self.serve(ByteStream(transport, protocol, self.drain_idle_timeout))  # type: ignore[arg-type]
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self, stream: ByteStream) -> None:
        """Run the handler for ``stream`` and close it after, as for an accepted
        connection; public for connections made another way (:mod:`.memory`)."""
        try:
            await self._handler(stream)
        except asyncio.CancelledError:
            stream.abort()
            raise
        except Exception:
            log.exception("connection handler failed")
            stream.abort()
        else:
            await stream.aclose()

    async def start(
        self,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        sock: socket.socket | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if ssl is not None:
            kwargs["ssl"] = ssl
            kwargs["ssl_handshake_timeout"] = handshake_timeout
            kwargs["ssl_shutdown_timeout"] = TLS_SHUTDOWN_TIMEOUT
        if sock is not None:
            self._server = await loop.create_server(self._factory, sock=sock, **kwargs)
        else:
            self._server = await loop.create_server(
                self._factory, host, port, reuse_address=True, **kwargs
            )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._server.sockets) if self._server else []

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
) -> Server:
    server = Server(handler)
    await server.start(host, port, ssl=ssl)
    return server

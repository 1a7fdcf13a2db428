"""The asyncio driver of :class:`~hatchway.protocol.spdy.SpdyProtocol` over a ByteStream.

One reader task feeds the socket's bytes to the protocol and dispatches its events; an
optional pinger task pings every ``ping_interval`` (kubectl does every 5 s). The
connection owns both and cancels and awaits them on close.

Backpressure (protocol.md 3.6, SPDY as Kubernetes speaks it has no windows): each stream
buffers up to ``stream_buffer`` bytes; once one holds that much the reader stops reading
the socket until it is down to a quarter (``streambuf.ReceiveGate``), so TCP slows the
peer. Writers await ``ByteStream.drain()``. Frames the reader must answer (PING,
SYN_STREAM, a stream-level fault) are answered only as fast as the peer reads: after a
read that made us write, the reader waits for the send buffer to drain, so a peer that
floods pings and never reads cannot grow our memory.

Closing never cuts a peer that is still reading (``ByteStream.close``); a server that
must not send GOAWAY before the client is done (spdystream acts on it at once, section
3.5) waits with :meth:`SpdyConnection.finish_output` (:meth:`~SpdyConnection.wait_hang_up`).

Streams: a SYN_STREAM the peer reset in the same read is never replied to; beyond
``SpdyLimits.max_streams`` open peer streams, and after :meth:`SpdyConnection.stop_accepting`,
new streams get RST_STREAM REFUSED_STREAM. Whatever fails in the reader ends the
connection, so the session above always sees its end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from hatchway.errors import ConnectionClosedError, ProtocolError, StreamResetError
from hatchway.protocol.spdy import (
    CANCEL,
    REFUSED_STREAM,
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcknowledged,
    SpdyLimits,
    SpdyProtocol,
    SpdyUsageError,
    StreamOpened,
    StreamReplied,
    StreamReset,
    StreamState,
)
from hatchway.transport.base import Connection, Stream
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.streambuf import BufferedStream, ReceiveGate

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
STREAM_BUFFER = 1024 * 1024
REPLY_TIMEOUT = 30.0  # client-go waits this long for each SYN_REPLY (section 3.8)
_LOCAL_DONE = (StreamState.HALF_CLOSED_LOCAL, StreamState.SYN_SENT_FIN, StreamState.CLOSED)
_AWAITING_REPLY = (StreamState.SYN_RECEIVED, StreamState.SYN_RECEIVED_FIN)


class SpdyStream(BufferedStream):
    """One SPDY stream. ``read`` returns ``b""`` at the peer's FIN, a reset, or the end
    of the connection; ``write`` raises ConnectionClosedError (StreamResetError after a
    peer's RST_STREAM) once the stream or connection is gone."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: Mapping[str, str]):
        super().__init__(conn._gate, headers)
        self._conn = conn
        self.stream_id = stream_id
        self._fin_sent = False
        self.reset_code: int | None = None
        self._replied: asyncio.Future[None] | None = None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not isinstance(data, bytes) and not (isinstance(data, memoryview) and data.readonly):
            data = bytes(data)  # the transport may keep a view: never of a mutable buffer
        self._conn._send(self, data, fin=False)
        await self._conn._drain()

    writes_nowait = True

    def write_nowait(self, data: bytes) -> bool:
        if data:
            self._conn._send(self, data, fin=False)
        return not self._conn._bs.write_blocked

    async def drain(self) -> None:
        await self._conn._drain()

    async def write_eof(self) -> None:
        if self._fin_sent or self.reset_code is not None or self._conn._ended:
            return
        self._conn._send(self, b"", fin=True)
        await self._conn._drain()

    def reset(self) -> None:
        self._conn._reset(self)

    def refuse(self) -> None:
        """Reset the stream because the session has no use for it (REFUSED_STREAM)."""
        self._conn._reset(self, REFUSED_STREAM)


class SpdyConnection(Connection):
    """SPDY/3.1 over an upgraded ByteStream (which may hold bytes read past the 101)."""

    def __init__(
        self,
        stream: ByteStream,
        *,
        client: bool,
        protocol: str = "",
        ping_interval: float | None = None,
        limits: SpdyLimits = SpdyLimits(),
        reply_timeout: float = REPLY_TIMEOUT,
        stream_buffer: int = STREAM_BUFFER,
    ) -> None:
        self._bs = stream
        self._proto = SpdyProtocol(client, limits)
        self.protocol = protocol
        self.client = client
        self._ping_interval = ping_interval
        self._reply_timeout = reply_timeout
        self._gate = ReceiveGate(stream_buffer)
        self._streams: dict[int, SpdyStream] = {}
        self._accepted: collections.deque[SpdyStream] = collections.deque()
        self._accepting = True
        self._accept_waiter: asyncio.Future[None] | None = None
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = False
        self._closed = asyncio.Event()
        #: The events of the read being dispatched, and the index of the next one.
        self._pending: Sequence[Event] = ()
        self._pending_from = 0
        #: The peer's GOAWAY, if one came.
        self.goaway: GoAwayReceived | None = None
        #: Why the connection ended, if not cleanly.
        self.error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn the reader (and the pinger if ``ping_interval`` is set)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._read_loop(), name="spdy-reader"))
        if self._ping_interval:
            self._tasks.append(loop.create_task(self._ping_loop(), name="spdy-pinger"))

    async def __aenter__(self) -> SpdyConnection:
        self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """RST_STREAM CANCEL for streams we have not finished, GOAWAY, flush, close."""
        if not self._ended:
            for sid in self._proto.open_streams:
                if self._proto.stream_state(sid) not in _LOCAL_DONE:
                    self._proto.reset_stream(sid, CANCEL)
            self._proto.goaway()
            self._flush()
        self._finish(None)
        await self._stop_tasks()
        # Waits for as long as the peer reads what is queued; cut only if it stops.
        if not await self._bs.aclose():
            self.cut = True

    async def finish_output(self, streams: Iterable[Stream]) -> None:
        """FIN on each of ``streams``, then :meth:`wait_hang_up`: spdystream hands DATA
        frames to per-stream worker queues but acts on a GOAWAY at once (section 3.5,
        3.6), so closing first can drop the client's last output. The client closes as
        soon as it has read every stream to EOF; a fixed wait would cut slow readers."""
        await super().finish_output(streams)
        await self.wait_hang_up()

    async def wait_hang_up(self) -> bool:
        """Wait for the peer to end the connection for as long as it keeps taking what
        we sent (kubectl's pings, answered every 5 s, show it alive while it writes out
        what it holds); False when it took nothing for the stream's drain idle timeout
        with our output still queued (then the connection is cut, :attr:`cut`)."""
        if await self._bs.wait_draining(self._closed.wait()) == "cut":
            self.cut = True
            self.abort()
        return not self.cut

    def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._bs.abort()
        self._finish(ConnectionClosedError("connection aborted"))

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._ended

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _finish(self, error: BaseException | None) -> None:
        """The connection is over: end every stream and wake every waiter. Idempotent."""
        if self._ended:
            return
        self._ended = True
        if error is not None and self.error is None:
            self.error = error
        closed = ConnectionClosedError("SPDY connection closed")
        for stream in self._streams.values():
            stream.feed_eof()
            if stream._replied is not None and not stream._replied.done():
                stream._replied.set_exception(closed)
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(closed)
        if self._accept_waiter is not None and not self._accept_waiter.done():
            self._accept_waiter.set_result(None)
        self._gate.close()
        self._closed.set()

    # -- streams --------------------------------------------------------------------------
    async def open_stream(self, headers: Mapping[str, str], fin: bool = False) -> SpdyStream:
        """SYN_STREAM, then wait (``reply_timeout``) for the peer's SYN_REPLY."""
        if self._ended:
            raise ConnectionClosedError("SPDY connection closed")
        try:
            sid = self._proto.open_stream(headers, fin)
        except SpdyUsageError as exc:
            raise ConnectionClosedError(str(exc)) from exc
        stream = SpdyStream(self, sid, headers)
        stream._fin_sent = fin
        stream._replied = asyncio.get_running_loop().create_future()
        self._streams[sid] = stream
        self._flush()
        try:
            async with asyncio.timeout(self._reply_timeout):
                await stream._replied
        except TimeoutError:
            self._reset(stream)
            raise ConnectionClosedError(f"no SYN_REPLY for stream {sid}") from None
        return stream

    async def accept_stream(self) -> SpdyStream:
        """The next peer-opened stream, already answered with SYN_REPLY."""
        while not self._accepted:
            if self._ended:
                raise ConnectionClosedError("SPDY connection closed")
            self._accept_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._accept_waiter
            finally:
                self._accept_waiter = None
        return self._accepted.popleft()

    async def accept_streams(self, names: Sequence[str], *, timeout: float) -> dict[str, Stream]:
        """The peer's streams of the types in ``names`` (see :class:`Connection`)."""
        streams: dict[str, Stream] = {}
        async with asyncio.timeout(timeout):
            while not all(name in streams for name in names):
                stream = await self.accept_stream()
                if stream.name in names and stream.name not in streams:
                    streams[stream.name] = stream
                else:
                    log.debug("resetting unexpected stream %r", stream.name)
                    stream.reset()
        self.stop_accepting()
        return streams

    def stop_accepting(self) -> None:
        """The session has all the streams it needs: streams opened but not yet taken by
        :meth:`accept_stream` are reset, later ones refused (RST_STREAM REFUSED_STREAM)
        without a reply, so a peer cannot make the connection hold streams nobody reads.
        The protocol frees its header compression contexts (no header block is sent or
        read from then on: :meth:`SpdyProtocol.refuse_streams`)."""
        self._accepting = False
        self._proto.refuse_streams()
        while self._accepted:
            self._accepted.popleft().refuse()

    async def ping(self, timeout: float = 30.0) -> float:
        """Send a PING and return the round-trip time in seconds."""
        if self._ended:
            raise ConnectionClosedError("SPDY connection closed")
        loop = asyncio.get_running_loop()
        ping_id = self._proto.ping()
        fut = self._pings[ping_id] = loop.create_future()
        start = loop.time()
        self._flush()
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            self._pings.pop(ping_id, None)
        return loop.time() - start

    # -- used by SpdyStream ---------------------------------------------------------------
    def _send(self, stream: SpdyStream, data: bytes | memoryview, fin: bool) -> None:
        if stream.reset_code is not None:
            raise StreamResetError(f"stream {stream.name!r} was reset", code=stream.reset_code)
        if self._ended:
            raise ConnectionClosedError("SPDY connection closed")
        try:
            self._proto.send_data(stream.stream_id, data, fin)
        except SpdyUsageError as exc:
            raise ConnectionClosedError(str(exc)) from exc
        stream._fin_sent = stream._fin_sent or fin
        self._flush()
        self._forget_if_done(stream.stream_id)

    async def _drain(self) -> None:
        await self._bs.drain()
        if self._ended and self.error is not None:
            raise ConnectionClosedError(f"SPDY connection failed: {self.error}")

    def _reset(self, stream: SpdyStream, code: int = CANCEL) -> None:
        if self._ended or stream.reset_code is not None:
            return
        stream.reset_code = code
        self._proto.reset_stream(stream.stream_id, code)
        self._flush()
        self._drop(stream)

    # -- internals ------------------------------------------------------------------------
    def _flush(self) -> bool:
        """Write what the protocol queued; whether there was anything."""
        bufs = self._proto.buffers_to_send()
        if bufs and not self._bs.is_closing:
            self._bs.writelines(bufs)
        return bool(bufs)

    def _drop(self, stream: SpdyStream) -> None:
        self._streams.pop(stream.stream_id, None)
        stream.abort()

    def _forget_if_done(self, sid: int) -> None:
        if self._proto.stream_state(sid) is StreamState.CLOSED:
            self._streams.pop(sid, None)

    async def _read_loop(self) -> None:
        error: BaseException | None = None
        try:
            while not self._ended:
                if self._gate.paused:
                    if not await self._gate.wait_open(None if self.client else self._bs):
                        raise ConnectionClosedError("peer went away while its streams were full")
                    continue
                data = await self._bs.read(READ_CHUNK)
                if not data:
                    break
                try:
                    events = self._proto.receive_data(data)
                finally:
                    replied = self._flush()
                self._pending = events
                for index, event in enumerate(events):
                    self._pending_from = index + 1
                    self._dispatch(event)
                self._pending = ()
                if self.goaway is not None:
                    break  # spdystream processes nothing after GOAWAY (section 3.5)
                if replied and self._bs.write_blocked:
                    # What the peer sent made us answer (PING, RST_STREAM, SYN_REPLY) and
                    # it does not read: read no more until it does, or a ping flood would
                    # queue replies without bound. Data alone never stops the reader (both
                    # sides of a bulk exchange would wait for each other).
                    await self._bs.drain()
        except ProtocolError as exc:
            log.warning("SPDY peer broke the protocol: %s", exc)
            error = exc
        except (ConnectionClosedError, OSError) as exc:
            error = exc
        except Exception as exc:
            # A bug, not the peer's fault: end the connection all the same, so that the
            # session notices and kills its process, rather than leave it orphaned.
            log.exception("SPDY reader failed")
            error = exc
        finally:
            self._finish(error)
            self._bs.close()

    async def _ping_loop(self) -> None:
        assert self._ping_interval
        while not self._ended:
            await asyncio.sleep(self._ping_interval)
            if not self._ended:
                self._proto.ping()
                self._flush()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            self._on_data(event)
        elif isinstance(event, StreamOpened):
            self._on_opened(event)
        elif isinstance(event, StreamReplied):
            stream = self._streams.get(event.stream_id)
            if stream is not None and stream._replied is not None:
                if not stream._replied.done():
                    stream._replied.set_result(None)
                if event.fin:
                    stream.feed_eof(fin=True)
                # Not forgotten here even when the protocol says CLOSED: that state is
                # the one after the whole read, and a DATA+FIN or RST_STREAM read with
                # the SYN_REPLY (kubectl's port-forward error streams) is still to be
                # dispatched to this stream. _on_data and _on_reset forget it.
                if not self._later_events_for(event.stream_id):
                    self._forget_if_done(event.stream_id)
        elif isinstance(event, StreamReset):
            self._on_reset(event)
        elif isinstance(event, PingAcknowledged):
            fut = self._pings.get(event.ping_id)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(event, GoAwayReceived):
            self.goaway = event

    def _later_events_for(self, stream_id: int) -> bool:
        """Whether an event of this read not dispatched yet is for ``stream_id``."""
        return any(
            getattr(e, "stream_id", None) == stream_id for e in self._pending[self._pending_from :]
        )

    def _on_data(self, event: DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        if event.data:
            stream.feed(event.data)
        if event.fin:
            stream.feed_eof(fin=True)
            self._forget_if_done(event.stream_id)

    def _on_opened(self, event: StreamOpened) -> None:
        if self._proto.stream_state(event.stream_id) not in _AWAITING_REPLY:
            return  # reset by the peer in the same read: nothing to reply to or accept
        if not self._accepting:
            self._proto.reset_stream(event.stream_id, REFUSED_STREAM)
            self._flush()
            return
        stream = SpdyStream(self, event.stream_id, event.headers)
        self._streams[event.stream_id] = stream
        # Reply at once: kubectl waits for each reply before its next SYN_STREAM (3.5).
        self._proto.reply(event.stream_id)
        self._flush()
        if event.fin:
            stream.feed_eof(fin=True)
            self._forget_if_done(event.stream_id)
        self._accepted.append(stream)
        if self._accept_waiter is not None and not self._accept_waiter.done():
            self._accept_waiter.set_result(None)

    def _on_reset(self, event: StreamReset) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        stream.reset_code = event.status
        if stream._replied is not None and not stream._replied.done():
            stream._replied.set_exception(
                StreamResetError(f"stream {event.stream_id} reset", code=event.status)
            )
        self._drop(stream)

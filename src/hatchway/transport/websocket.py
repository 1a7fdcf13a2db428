"""The WebSocket transport: Kubernetes channel protocols over an upgraded ByteStream.

Framing is ``websockets``' sans-I/O :class:`websockets.protocol.Protocol`, created in the
OPEN state after our own HTTP handshake (``protocol/handshake.py``); the channel layer is
``protocol/channel.py``. This module only feeds and drains them.

Choices a caller should know:

* Channels are local. ``open_stream({"streamtype": "stdout"})`` returns the channel
  object without any wire traffic, on both sides. Messages for channels 0-4 are buffered
  even before the channel is opened, so nothing sent right after the 101 is lost;
  messages for higher channels are discarded (protocol.md 5.3).
* ``accept_stream()`` always raises :class:`ConnectionClosedError`: WebSocket has no
  peer-initiated streams; :meth:`WebSocketConnection.accept_streams` opens the channels a
  session expects.
* The server's initial empty message (protocol.md 5.3) is *not* sent on its own: it goes out
  when the session has its channels (:meth:`WebSocketConnection.accept_streams`, on the
  lowest one the server writes), or with :meth:`WebSocketConnection.send_initial_message`.
* ``read()`` returns ``b""`` at EOF for every ending (close signal, close frame, lost
  connection, protocol error); :attr:`WebSocketConnection.close_code` tells them apart
  (1000 clean; 1006 no close frame; otherwise the peer's code), and
  :attr:`WebSocketConnection.error` holds a protocol fault we detected.
* Backpressure: each channel buffers up to ``channel_buffer`` bytes; at that the reader
  task stops reading the socket until the consumer has it down to a quarter
  (``streambuf.ReceiveGate``, protocol.md 5.3), so TCP slows the peer. Writes wait on
  ``ByteStream.drain()``. Pongs and close frames the reader writes wait for the send
  buffer to drain before the next read (a ping flood from a peer that does not read
  stays bounded).
* Closing waits for the peer's close frame as long as the peer keeps taking our output
  (``ByteStream.wait_draining``); one that takes nothing for the stream's
  ``drain_idle_timeout`` is cut (:attr:`WebSocketConnection.cut`), one that has it all
  gets ``close_timeout`` to answer.
* A message is bounded in bytes (``max_message``, by the Protocol) and in frames
  (``max_fragments``, empty continuation frames counted): beyond, close 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from hatchway.errors import ConnectionClosedError, LimitExceededError, ProtocolError
from hatchway.protocol import channel as ch
from hatchway.protocol.websocket_frame import FastMessage, FrameSplitter, data_frame
from hatchway.transport.base import Connection, Stream
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.chunks import Buffer
from hatchway.transport.streambuf import BufferedStream, ReceiveGate

log = logging.getLogger(__name__)

#: Largest incoming message (Go servers' default); more is closed with 1009.
DEFAULT_MAX_MESSAGE = 32 * 1024 * 1024
#: Frames of one fragmented message, empty ones included: a Go client (gorilla, 4 KiB
#: frames) needs 8192 for a message of DEFAULT_MAX_MESSAGE; more is closed with 1009.
DEFAULT_MAX_FRAGMENTS = 16384
#: Per-channel receive buffer bound; the socket is not read while one is above it.
DEFAULT_CHANNEL_BUFFER = 1024 * 1024
#: Writes larger than this become several messages (each independent data).
WRITE_CHUNK = 1024 * 1024
READ_SIZE = 1024 * 1024
#: Once the peer has acknowledged everything we sent, how long it has to answer our
#: close frame (or to close the TCP connection after the closing handshake). Before
#: that, a closing connection waits as long as the peer keeps reading: only one that
#: takes none of our output for the stream's drain idle timeout is cut.
CLOSE_TIMEOUT = 5.0


class WebSocketStream(BufferedStream):
    """One channel of a :class:`WebSocketConnection`."""

    def __init__(self, conn: WebSocketConnection, number: int) -> None:
        super().__init__(conn._gate, {"streamtype": ch.NAME_BY_CHANNEL.get(number, "")})
        self._conn = conn
        self.number = number
        self._reset = False
        self._eof_sent = False

    # -- sending --------------------------------------------------------------------------
    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._reset:
            raise ConnectionClosedError(f"channel {self.name!r} was reset")
        await self._conn._send(self.number, data)

    writes_nowait = True

    def write_nowait(self, data: bytes) -> bool:
        if self._reset:
            raise ConnectionClosedError(f"channel {self.name!r} was reset")
        return self._conn._send_nowait(self.number, data)

    async def drain(self) -> None:
        await self._conn._drain()

    async def write_eof(self) -> None:
        """v5 client stdin: send the close signal ``FF 00``; elsewhere a no-op (the
        server never sends close signals, older versions have none)."""
        conn = self._conn
        if (
            conn.capabilities.close_signal
            and conn.client
            and self.number == ch.STDIN
            and not self._eof_sent
        ):
            self._eof_sent = True
            await conn._send_raw(ch.encode_close_signal(self.number))

    def reset(self) -> None:
        """WebSocket has no per-channel reset: drop what is buffered, EOF our reader and
        refuse further writes on this channel, locally only."""
        self._reset = True
        self.abort()


class WebSocketConnection(Connection):
    """A Kubernetes channel-protocol WebSocket over an already upgraded ByteStream."""

    def __init__(
        self,
        stream: ByteStream,
        *,
        client: bool,
        protocol: str,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        channel_buffer: int = DEFAULT_CHANNEL_BUFFER,
        close_timeout: float = CLOSE_TIMEOUT,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
        num_channels: int = ch.NUM_CHANNELS,
    ) -> None:
        self._stream = stream
        #: Channels the protocol has (port-forward: two per port, protocol.md 6.3).
        self._num_channels = num_channels
        self.client = client
        self.protocol = protocol
        self.capabilities = ch.capabilities(protocol)
        self._base64 = self.capabilities.base64
        self._ws = Protocol(
            Side.CLIENT if client else Side.SERVER,
            state=State.OPEN,
            max_size=max_message,
            logger=log,
        )
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._gate = ReceiveGate(channel_buffer)
        self._channels: dict[int, WebSocketStream] = {}
        self._fragments: list[bytes] | None = None
        self._max_fragments = max_fragments
        self._splitter = FrameSplitter(server=not client, max_size=max_message)
        self._tasks: list[asyncio.Task[None]] = []
        self._done = asyncio.Event()
        self._started = False
        #: Close code the peer sent (1006 when none arrived), set once closed.
        self.close_code: int | None = None
        self.close_reason: str = ""
        #: The protocol fault we failed the connection for, if any.
        self.error: ProtocolError | None = None
        self.last_pong: float | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> WebSocketConnection:
        if not self._started:
            self._started = True
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._read_loop()))
            if self._ping_interval:
                self._tasks.append(loop.create_task(self._ping_loop(self._ping_interval)))
        return self

    async def __aenter__(self) -> WebSocketConnection:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.close()
        else:
            self.abort()
            await self.wait_closed()

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    # -- streams --------------------------------------------------------------------------
    def channel(self, number: int) -> WebSocketStream:
        stream = self._channels.get(number)
        if stream is None:
            stream = self._channels[number] = WebSocketStream(self, number)
            if self._done.is_set():
                stream.feed_eof()
        return stream

    async def open_stream(self, headers: Mapping[str, str]) -> WebSocketStream:
        name = headers.get("streamtype", "")
        number = ch.CHANNEL_BY_NAME.get(name)
        if number is None:
            raise ValueError(f"no WebSocket channel for streamtype {name!r}")
        stream = self.channel(number)
        stream._headers = {k.lower(): v for k, v in headers.items()}
        return stream

    async def accept_stream(self) -> Stream:
        raise ConnectionClosedError(
            "WebSocket channels are not opened by the peer; use open_stream()"
        )

    async def accept_streams(self, names: Sequence[str], *, timeout: float) -> dict[str, Stream]:
        """The channels named by ``names``, then the server's one empty message on the
        lowest of them it writes to (see :class:`Connection`)."""
        streams: dict[str, Stream] = {}
        for name in names:
            streams[name] = await self.open_stream({"streamtype": name})
        outputs = [n for n in (ch.STDOUT, ch.STDERR, ch.ERROR) if ch.NAME_BY_CHANNEL[n] in streams]
        if outputs:
            async with asyncio.timeout(timeout):
                await self.send_initial_message(min(outputs))
        return streams

    async def send_initial_message(self, channel: int | str) -> None:
        """The server's one empty message on its lowest writable channel (protocol.md 5.3)."""
        number = ch.CHANNEL_BY_NAME[channel] if isinstance(channel, str) else channel
        await self._send(number, b"")

    # -- sending --------------------------------------------------------------------------
    async def _send(self, number: int, data: bytes | bytearray | memoryview) -> None:
        view = data if isinstance(data, bytes) else memoryview(data).cast("B")
        if not isinstance(data, bytes) and not view.readonly:
            view = bytes(view)  # the transport may keep what it is given: never a mutable one
        total = len(view)
        off = 0
        while True:
            piece = view[off : off + WRITE_CHUNK] if total > WRITE_CHUNK else view
            if self.capabilities.base64:
                self._send_text(number, bytes(piece))
            else:
                self._send_binary(number, piece)
            await self._drain()
            off += WRITE_CHUNK
            if off >= total:
                return

    def _send_nowait(self, number: int, data: bytes) -> bool:
        """One message of ``data`` (at most ``WRITE_CHUNK``), now: whether the send
        buffer has room for more."""
        if self._stream.is_closing:
            raise ConnectionClosedError("connection is closed")
        if len(data) > WRITE_CHUNK:
            raise ValueError(f"write_nowait takes at most {WRITE_CHUNK} bytes")
        if self._base64:
            self._send_text(number, data)
        else:
            self._send_binary(number, data)
        return not self._stream.write_blocked

    def _send_binary(self, number: int, piece: Buffer) -> None:
        """Frame ``number + piece`` ourselves (websocket_frame.data_frame): the same bytes
        as ``Protocol.send_binary`` without its copies of the payload."""
        if self._ws.state is not State.OPEN:
            raise ConnectionClosedError("WebSocket connection is closing")
        if self._stream.is_closing:
            return
        self._stream.writelines(data_frame(number, piece, mask=self.client))

    def _send_text(self, number: int, piece: bytes) -> None:
        msg = ch.encode_message(self.capabilities, number, piece)
        assert isinstance(msg, str)
        try:
            self._ws.send_text(msg.encode("ascii"))
        except InvalidState:
            raise ConnectionClosedError("WebSocket connection is closing") from None
        self._flush()

    async def _send_raw(self, payload: bytes) -> None:
        try:
            self._ws.send_binary(payload)
        except InvalidState:
            raise ConnectionClosedError("WebSocket connection is closing") from None
        self._flush()
        await self._drain()

    async def _drain(self) -> None:
        if self._stream.is_closing:
            raise ConnectionClosedError("connection is closed")
        await self._stream.drain()

    def _flush(self) -> bool:
        """Write what the protocol queued: frames, pongs, close; ``b""`` means the TCP
        connection should end (server after the closing handshake, client at EOF).
        Whether there was anything."""
        writes = self._ws.data_to_send()
        if not writes:
            return False
        eof = writes[-1] == b""
        frames = [w for w in writes if w]
        if frames and not self._stream.is_closing:
            self._stream.writelines(frames)
        if eof:
            self._stream.close()
        return True

    # -- receiving ------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        ws = self._ws
        try:
            while ws.state is not State.CLOSED:
                if not await self._gate.wait_open(None if self.client else self._stream):
                    break  # the peer went away while our channel buffers were full
                if ws.close_expected():
                    data = await self._read_closing()
                else:
                    if await self._stream.receive(self._received):
                        if self._stream.write_blocked:
                            await self._stream.drain()  # as below, after a pong or close
                        continue  # the state, the gate or the send buffer changed
                    data = await self._stream.read(READ_SIZE)
                if not data:
                    # Whatever is left is an incomplete frame: the Protocol judges it.
                    ws.receive_data(self._splitter.take_all())
                    ws.receive_eof()
                    self._flush()
                    break
                if self._receive(data) and self._stream.write_blocked:
                    # We answered (pong, close) a peer that does not read: read no more
                    # until it does, or a ping flood queues pongs without bound. Data
                    # alone never stops the reader (a bulk exchange both ways would
                    # wait on itself).
                    await self._stream.drain()
        except TimeoutError:
            log.debug("peer did not end the connection after the close frame")
        except ConnectionClosedError:
            pass
        finally:
            self._finish()

    def _received(self, data: bytes) -> bool:
        """What arrives while the connection is open and reading is not paused, from the
        socket's callback (:meth:`ByteStream.receive`): a keystroke reaches its channel
        -- and through a stdin sink the pty -- in the loop iteration that read it.
        Whether to go on so; False hands back to the read loop, which decides as for a
        read (the gate, the closing handshake, a peer that does not read our pongs)."""
        wrote = self._receive(data)
        if wrote and self._stream.write_blocked:
            return False
        return (
            self._ws.state is State.OPEN and not self._ws.close_expected() and not self._gate.paused
        )

    async def _read_closing(self) -> bytes:
        """The next read once we sent our close frame: the peer gets as long as it keeps
        reading what we sent before it (TimeoutError when it does not)."""
        reading = asyncio.ensure_future(self._stream.read(READ_SIZE))
        end = await self._stream.wait_draining(reading, self._close_timeout)
        if end == "cut":
            self.cut = True
        if end != "done":
            raise TimeoutError
        return reading.result()

    def _receive(self, data: bytes) -> bool:
        """Deliver the frames ``data`` completes: fast data messages straight to their
        channel, everything else through the Protocol (websocket_frame.FrameSplitter).
        Whether it made us write anything."""
        ws, splitter = self._ws, self._splitter
        splitter.feed(data)
        wrote = False
        while True:
            open_ = ws.state is State.OPEN
            if not open_:
                splitter.passthrough = True
            item = splitter.next(open_ and ws.current_size is None and not self._base64)
            if item is None:
                return wrote
            if isinstance(item, FastMessage):
                self._on_fast_message(item)
                continue
            ws.receive_data(item)
            wrote = self._flush() or wrote
            for frame in ws.events_received():
                self._on_frame(frame)

    def _on_fast_message(self, msg: FastMessage) -> None:
        number = msg.channel
        if number == ch.CLOSE_SIGNAL:
            self._on_message(bytes((number,)) + b"".join(msg.data))
        elif number < self._num_channels:
            if msg.size:
                self.channel(number).feed_parts(msg.data, msg.size)
        else:
            log.debug("discarding message for unknown channel %d", number)

    def _on_frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op is Opcode.BINARY or op is Opcode.TEXT:
            if frame.fin:
                self._on_message(frame.data)
            else:
                self._fragments = [frame.data]
        elif op is Opcode.CONT:
            if self._fragments is not None:
                if len(self._fragments) >= self._max_fragments:
                    # The Protocol bounds the message's bytes, not its frames: empty
                    # continuation frames would grow this list without end.
                    limit = f"message in more than {self._max_fragments} fragments"
                    self._fragments = None
                    self._fail(LimitExceededError(limit, code=1009))
                    return
                self._fragments.append(frame.data)
                if frame.fin:
                    message, self._fragments = b"".join(self._fragments), None
                    self._on_message(message)
        elif op is Opcode.PONG:
            self.last_pong = asyncio.get_running_loop().time()
        elif op is Opcode.CLOSE:
            self._eof_all()

    def _on_message(self, payload: bytes) -> None:
        if self.error is not None:
            return
        try:
            number, data = ch.decode_message(
                self.capabilities, payload, num_channels=self._num_channels
            )
        except ProtocolError as exc:
            self._fail(exc)
            return
        if number == ch.CLOSE_SIGNAL and self.capabilities.close_signal:
            self.channel(data[0]).feed_eof(fin=True)  # not after a close frame or the end
        elif number < self._num_channels:
            if data:
                self.channel(number).feed(data)
        else:
            log.debug("discarding message for unknown channel %d", number)

    def _fail(self, exc: ProtocolError) -> None:
        log.warning("WebSocket protocol error: %s", exc)
        self.error = exc
        if self._ws.state is State.OPEN:
            self._ws.fail(exc.code or 1002, str(exc)[:120])
            self._flush()
        self._eof_all()

    def _eof_all(self) -> None:
        for stream in self._channels.values():
            stream.feed_eof()

    def _finish(self) -> None:
        ws = self._ws
        if ws.state is State.CLOSED:
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason or ""
        elif ws.close_rcvd is not None:
            self.close_code, self.close_reason = ws.close_rcvd.code, ws.close_rcvd.reason
        else:
            self.close_code = self.close_code or 1006
        if (
            self.error is None
            and isinstance(ws.parser_exc, Exception)
            and not isinstance(ws.parser_exc, EOFError)
        ):
            self.error = ProtocolError(
                str(ws.parser_exc), code=ws.close_sent and ws.close_sent.code
            )
        self._eof_all()
        self._gate.close()
        self._stream.close()
        self._done.set()

    async def _ping_loop(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while self._ws.state is State.OPEN:
            await asyncio.sleep(interval)
            if self._ws.state is not State.OPEN:
                return
            last = self.last_pong if self.last_pong is not None else started
            if self._ping_timeout is not None and loop.time() - last > self._ping_timeout:
                log.warning("no pong for %.0f s; dropping the connection", loop.time() - last)
                self.abort()
                return
            self._ws.send_ping(b"")
            self._flush()

    # -- closing --------------------------------------------------------------------------
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send Close ``code`` after everything queued, wait for the peer's close (as
        long as it keeps reading, then ``close_timeout`` once it has everything; a peer
        that reads nothing for the drain idle timeout is cut), then close the socket."""
        if self._ws.state is State.OPEN:
            with contextlib.suppress(InvalidState):
                self._ws.send_close(code, reason)
            self._flush()
        # We are done reading: unblock a reader parked on a full channel buffer.
        for stream in self._channels.values():
            stream.abort()
        if not self._started:
            self._stream.close()
            self._finish()
        stream = self._stream
        end = await stream.wait_draining(self._done.wait(), self._close_timeout)
        if end == "cut":
            self.cut = True
        elif end == "delivered":
            stream.close()  # the peer has it all: the socket's own close ends the rest
        await self._stop_tasks()
        await stream.wait_closed()
        self.cut = self.cut or stream.cut

    def abort(self) -> None:
        self._stream.abort()
        for task in self._tasks:
            task.cancel()
        if not self._done.is_set():
            self.close_code = self.close_code or 1006
            self._eof_all()
            self._done.set()

    async def wait_closed(self) -> None:
        await self._done.wait()
        await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            if not task.done():
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

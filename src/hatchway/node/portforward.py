"""Port-forward on the node: connections to ports inside a pod's network namespace.

One session is one upgraded connection from the API server (protocol.md 6.3-6.6):

* SPDY (:class:`SpdyPortForward`): per forwarded connection the client opens an
  ``error`` stream and a ``data`` stream carrying the same ``port`` and ``requestid``
  headers. Once both are there the node connects to ``127.0.0.1:PORT`` (then
  ``[::1]:PORT``) inside the pod's network namespace and copies both ways, each
  direction half-closed on its own (the client's FIN becomes ``shutdown(SHUT_WR)``, the
  pod's EOF a FIN on the data stream); the error stream ends with the pair, carrying the
  kubelet's text when the connection failed. A stream with a bad header is reset, a pair
  not complete within the stream-creation timeout is reported and dropped, as the
  kubelet does (``pkg/kubelet/cri/streaming/portforward/httpstream.go``).
* WebSocket channels (:class:`ChannelPortForward`, the Python client's protocol): the
  ports come from ``?ports=``; port *i* has data channel ``2i`` and error channel
  ``2i+1``, each starting with the port as 2 bytes little-endian; one connection per
  port for the whole session (``.../portforward/websocket.go``).

The namespace is held open for the session (:func:`open_netns`) and entered in a thread
made for each connect (:func:`connect_in_netns`): ``setns`` changes the calling thread for
good, so it never runs on the event loop's thread nor on a pooled worker. The socket
keeps the namespace it was made in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hatchway.errors import ConnectionClosedError, HatchwayError
from hatchway.protocol import channel
from hatchway.protocol.portforward import MAX_HEADER_VALUE, parse_port
from hatchway.transport.base import Connection, Stream

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
READ_CHUNK = 256 * 1024
#: Channels the base64 framing can name ('0'-'9').
BASE64_CHANNELS = 10


@dataclass(frozen=True)
class PortForwardLimits:
    """Concurrent connections per session; how long a half-made stream pair may wait
    (the kubelet's stream-creation timeout); how long a connect inside the pod may take."""

    max_connections: int = 128
    stream_creation_timeout: float = 30.0
    connect_timeout: float = 10.0


class PortForwardError(HatchwayError):
    """A forwarded connection could not be made; the text goes to the error stream."""


#: ``dial(port)``: a connected, non-blocking socket inside the pod's namespace.
Dial = Callable[[int], Awaitable[socket.socket]]


# -- connecting inside the pod's network namespace ------------------------------------------


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _connect_blocking(netns_fd: int, port: int, timeout: float) -> socket.socket:
    """In the calling (dedicated) thread: enter the namespace of ``netns_fd`` (which this
    closes), connect to the port on loopback, IPv4 then IPv6, as containerd does; the
    error names both attempts."""
    try:
        _setns(netns_fd)
    finally:
        os.close(netns_fd)
    errors = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except OSError as exc:
            sock.close()
            net = "tcp4" if family == socket.AF_INET else "tcp6"
            addr = host if family == socket.AF_INET else f"[{host}]"
            why = exc.strerror or str(exc)
            if isinstance(exc, TimeoutError):
                why = "i/o timeout"
            errors.append(f"dial {net} {addr}:{port}: connect: {why.lower()}")
            continue
        sock.setblocking(False)
        return sock
    raise PortForwardError(
        f"failed to connect to localhost:{port} inside namespace, "
        f"IPv4: {errors[0]} IPv6 {errors[1]} "
    )


def open_netns(path: str) -> int:
    """A descriptor of the network namespace at ``path`` (``/proc/PID/ns/net``), held for
    a whole session: it keeps that namespace, so a pid reused after the sandbox died can
    never lead a connection into another pod's network. PortForwardError if gone."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PortForwardError(f"network namespace {path} is gone: {exc}") from None


async def connect_in_netns(netns_fd: int, port: int, timeout: float) -> socket.socket:
    """A socket connected to ``port`` on the loopback of the network namespace
    ``netns_fd`` names, made in a thread started for it alone (with a duplicate of the
    descriptor, so that the session may close its own meanwhile)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()
    fd = os.dup(netns_fd)

    def deliver(result: socket.socket | BaseException) -> None:
        if done.cancelled():
            if isinstance(result, socket.socket):
                result.close()
            return
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

    def work() -> None:
        result: socket.socket | BaseException
        try:
            result = _connect_blocking(fd, port, timeout)
        except (OSError, PortForwardError) as exc:
            result = exc
        try:
            loop.call_soon_threadsafe(deliver, result)
        except RuntimeError:  # the loop is closed: nobody wants the socket
            if isinstance(result, socket.socket):
                result.close()

    threading.Thread(target=work, name=f"netns-connect-{port}", daemon=True).start()
    try:
        return await done
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise PortForwardError(f"cannot enter the pod's network namespace: {exc}") from None
        raise PortForwardError(str(exc)) from None


# -- the byte copy ----------------------------------------------------------------------------


async def _stream_to_socket(
    stream: Stream, writer: asyncio.StreamWriter, counts: list[int]
) -> None:
    while chunk := await stream.read(READ_CHUNK):
        counts[0] += len(chunk)
        writer.write(chunk)
        await writer.drain()
    if stream.fin_received and writer.can_write_eof():
        writer.write_eof()  # the client is done sending: SHUT_WR, the pod may still answer


async def _socket_to_stream(
    reader: asyncio.StreamReader, stream: Stream, counts: list[int]
) -> None:
    while chunk := await reader.read(READ_CHUNK):
        counts[1] += len(chunk)
        await stream.write(chunk)
    await stream.write_eof()


async def splice(
    sock: socket.socket, stream: Stream, *, half_close: bool = True
) -> tuple[int, int]:
    """Copy between the pod's socket and ``stream`` until both directions ended (or
    either failed); returns (bytes to the pod, bytes from the pod). Closes the socket.
    Without ``half_close`` (a protocol where the client cannot end its direction: the
    v4 channels) the pod's EOF ends both."""
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
    counts = [0, 0]
    try:
        async with asyncio.TaskGroup() as group:
            up = group.create_task(_stream_to_socket(stream, writer, counts))
            down = group.create_task(_socket_to_stream(reader, stream, counts))
            if not half_close:
                await down
                up.cancel()
    except* (ConnectionClosedError, OSError) as eg:
        log.debug("port-forward copy ended: %s", eg.exceptions[0])
        stream.reset()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return counts[0], counts[1]


# -- SPDY: stream pairs ---------------------------------------------------------------------


@dataclass
class _Pair:
    request_id: str
    port: int
    error: Stream | None = None
    data: Stream | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass
class SessionStats:
    connections: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    ports: set[int] = field(default_factory=set)


class SpdyPortForward:
    """Serves one SPDY port-forward connection until the client hangs up."""

    def __init__(self, conn: Connection, dial: Dial, limits: PortForwardLimits) -> None:
        self.conn = conn
        self.dial = dial
        self.limits = limits
        self.stats = SessionStats()
        self._pairs: dict[str, _Pair] = {}
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> SessionStats:
        try:
            while True:
                try:
                    stream = await self.conn.accept_stream()
                except ConnectionClosedError:
                    break
                self._on_stream(stream)
        finally:
            for pair in self._pairs.values():
                if pair.timer is not None:
                    pair.timer.cancel()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return self.stats

    def _on_stream(self, stream: Stream) -> None:
        headers = stream.headers
        kind = headers.get("streamtype", "")
        port = parse_port(headers.get("port", ""))
        request_id = headers.get("requestid", "")
        if kind not in ("error", "data") or port is None or len(request_id) > MAX_HEADER_VALUE:
            log.info("port-forward: resetting stream with headers %r", dict(headers))
            stream.reset()
            return
        if not request_id:
            # Clients before requestid (kubectl < 1.3): the error stream precedes its data
            # stream by one client stream id (ids go up by 2), as the kubelet reckons.
            sid = int(getattr(stream, "stream_id", 0))
            request_id = str(sid if kind == "error" else sid - 2)
        pair = self._pairs.get(request_id)
        if pair is None:
            if len(self._pairs) + self._active >= self.limits.max_connections:
                log.info("port-forward: refusing stream beyond %d", self.limits.max_connections)
                stream.reset()
                return
            pair = self._pairs[request_id] = _Pair(request_id, port)
            loop = asyncio.get_running_loop()
            timeout = self.limits.stream_creation_timeout
            pair.timer = loop.call_later(timeout, self._timed_out, request_id)
        if getattr(pair, kind) is not None or pair.port != port:
            stream.reset()
            return
        setattr(pair, kind, stream)
        if pair.error is not None and pair.data is not None:
            del self._pairs[request_id]
            if pair.timer is not None:
                pair.timer.cancel()
            self._start(self._forward(pair))

    def _timed_out(self, request_id: str) -> None:
        pair = self._pairs.pop(request_id, None)
        if pair is None:
            return
        msg = f"timed out waiting for streams for request {request_id}"
        log.info("port-forward: %s", msg)
        if pair.data is not None:
            pair.data.reset()
        if pair.error is not None:
            self._start(self._report(pair.error, msg))

    def _start(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, stream: Stream, message: str) -> None:
        with contextlib.suppress(ConnectionClosedError):
            await stream.write(message.encode())
            await stream.write_eof()

    async def _forward(self, pair: _Pair) -> None:
        assert pair.error is not None and pair.data is not None
        self._active += 1
        self.stats.connections += 1
        self.stats.ports.add(pair.port)
        try:
            try:
                sock = await self.dial(pair.port)
            except PortForwardError as exc:
                self.stats.failed += 1
                pair.data.reset()
                await self._report(pair.error, f"error forwarding port {pair.port}: {exc}")
                return
            sent, received = await splice(sock, pair.data)
            self.stats.bytes_in += sent
            self.stats.bytes_out += received
            with contextlib.suppress(ConnectionClosedError):
                await pair.error.write_eof()
        finally:
            self._active -= 1


# -- WebSocket channels ---------------------------------------------------------------------


class ChannelPortForward:
    """Serves one WebSocket channel-protocol port-forward (one connection per port)."""

    def __init__(
        self, conn: Connection, dial: Dial, ports: list[int], limits: PortForwardLimits
    ) -> None:
        self.conn = conn
        self.dial = dial
        self.ports = ports
        self.limits = limits
        self.stats = SessionStats()

    async def run(self) -> SessionStats:
        from hatchway.transport.websocket import WebSocketConnection

        assert isinstance(self.conn, WebSocketConnection)
        if self.conn.capabilities.base64 and 2 * len(self.ports) > BASE64_CHANNELS:
            # A text message names its channel with one digit (protocol.md 5.5).
            log.info("port-forward: %d ports cannot be framed in base64", len(self.ports))
            return self.stats
        async with asyncio.TaskGroup() as group:
            for i, port in enumerate(self.ports):
                data, error = (self.conn.channel(n) for n in channel.port_forward_channels(i))
                group.create_task(self._forward(port, data, error))
        return self.stats

    async def _forward(self, port: int, data: Stream, error: Stream) -> None:
        prefix = port.to_bytes(2, "little")
        self.stats.ports.add(port)
        try:
            await data.write(prefix)
            await error.write(prefix)
            try:
                sock = await self.dial(port)
            except PortForwardError as exc:
                self.stats.failed += 1
                await error.write(f"error forwarding port {port}: {exc}".encode())
                return
            self.stats.connections += 1
            sent, received = await splice(sock, data, half_close=False)
            self.stats.bytes_in += sent
            self.stats.bytes_out += received
        except ConnectionClosedError:
            pass


async def serve(
    conn: Connection, netns: str, ports: list[int], limits: PortForwardLimits
) -> SessionStats:
    """Serve one accepted port-forward connection into the network namespace at path
    ``netns`` (held open for the session, :func:`open_netns`): SPDY stream pairs when it
    negotiated ``portforward.k8s.io``, else the WebSocket channel form for ``ports``."""
    try:
        fd = open_netns(netns)
    except PortForwardError as exc:
        log.warning("port-forward: %s", exc)
        return SessionStats()

    async def dial(port: int) -> socket.socket:
        return await connect_in_netns(fd, port, limits.connect_timeout)

    try:
        if conn.protocol == channel.PORT_FORWARD:
            return await SpdyPortForward(conn, dial, limits).run()
        return await ChannelPortForward(conn, dial, ports, limits).run()
    finally:
        os.close(fd)

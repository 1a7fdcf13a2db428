"""Exec with a subprocess-like asyncio API.

``run()`` returns a completed :class:`~hatchway.types.ExecResult`; ``create_process()``
returns a :class:`RemoteProcess` with ``stdin``/``stdout``/``stderr``, ``write_eof()``,
``resize()``, ``wait()`` and ``returncode``. The transport is chosen as kubectl 1.32
does: WebSocket (``v5.channel.k8s.io``) first, SPDY/3.1 only when the upgrade itself is
refused. The same code works against a real Kubernetes API server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from hatchway.errors import ApiError, ExecError, HandshakeError, ProtocolError
from hatchway.protocol import exec_options
from hatchway.rest import RestClient, status_from_response
from hatchway.types import ExecOptions, ExecResult

if TYPE_CHECKING:
    from hatchway.session.client import ClientSession
    from hatchway.transport.base import Connection, Stream

T = TypeVar("T")

WEBSOCKET_OFFER = ("v5.channel.k8s.io", "v4.channel.k8s.io")
#: With stdin only v5 is offered, as kubectl does (protocol.md 5.1): a pre-1.30 API server
#: passes other WebSocket offers through to the kubelet, which would pick v4 -- and v4
#: over WebSocket cannot signal stdin EOF, so ``write_eof()`` could never reach the
#: command. Refusing v5 there makes the kubelet answer 403, and we fall back to SPDY.
WEBSOCKET_OFFER_STDIN = ("v5.channel.k8s.io",)
SPDY_OFFER = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
#: kubectl's SPDY ping period (protocol.md 3.7) and WebSocket ping period (protocol.md 5.7).
PING_INTERVAL = 5.0
#: Closing, how long we wait on a server that takes none of what we still send (stdin,
#: our close): the session is over for us, so not the server's hours of idle timeout.
CLOSE_IDLE_TIMEOUT = 30.0


def _upgrade_failure(response) -> Exception:  # type: ignore[no-untyped-def]
    status = status_from_response(response.status, response.reason, response.body)
    body = response.body or b""
    if body.lstrip().startswith(b"{") and status.get("kind") == "Status":
        return ApiError(status)
    text = body.decode("utf-8", "replace").strip() or response.reason
    return HandshakeError(
        f"unable to upgrade connection: {text}",
        status=response.status,
        headers=list(response.headers),
        body=body,
    )


def websocket_offer(options: ExecOptions) -> tuple[str, ...]:
    return WEBSOCKET_OFFER_STDIN if options.stdin else WEBSOCKET_OFFER


async def _connect_websocket(
    rest: RestClient, path: str, query: list[tuple[str, str]], offer: tuple[str, ...]
) -> Connection:
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-key": key,
        "sec-websocket-version": "13",
        "sec-websocket-protocol": ", ".join(offer),
    }
    response, stream = await _while_waiting(
        rest.upgrade("GET", path, query, headers), _import_websocket_session
    )
    if stream is None:
        raise _upgrade_failure(response)
    from hatchway.protocol import handshake
    from hatchway.transport.websocket import WebSocketConnection

    try:
        protocol = handshake.check_websocket_response(response.status, response.headers, key, offer)
    except HatchwayErrors as exc:
        stream.abort()
        raise HandshakeError(str(exc), status=response.status) from exc

    stream.drain_idle_timeout = CLOSE_IDLE_TIMEOUT
    conn = WebSocketConnection(stream, client=True, protocol=protocol, ping_interval=PING_INTERVAL)
    conn.start()
    return conn


async def _connect_spdy(rest: RestClient, path: str, query: list[tuple[str, str]]) -> Connection:
    headers = {"connection": "Upgrade", "upgrade": "SPDY/3.1"}
    extra = [("x-stream-protocol-version", p) for p in SPDY_OFFER]
    response, stream = await rest.upgrade("POST", path, query, headers, extra_headers=extra)
    if stream is None:
        raise _upgrade_failure(response)
    from hatchway.protocol import handshake

    try:
        protocol = handshake.check_spdy_response(response.status, response.headers)
    except HatchwayErrors as exc:
        stream.abort()
        raise HandshakeError(str(exc), status=response.status) from exc
    # Imported here: SPDY is only the fallback, and exec should start fast.
    from hatchway.transport.spdy import SpdyConnection

    stream.drain_idle_timeout = CLOSE_IDLE_TIMEOUT
    conn = SpdyConnection(stream, client=True, protocol=protocol, ping_interval=PING_INTERVAL)
    conn.start()
    return conn


HatchwayErrors = (ProtocolError, HandshakeError, ValueError)


async def _while_waiting(request: Awaitable[T], work: Callable[[], object]) -> T:
    """Start ``request`` (its bytes go out at its first wait), do ``work`` while the
    server answers, then return the answer."""
    pending = asyncio.ensure_future(request)
    await asyncio.sleep(0)
    if not pending.done():
        try:
            work()
        except BaseException:
            pending.cancel()
            raise
    return await pending


def _import_websocket_session() -> None:
    """What an exec needs once the 101 is in (tens of milliseconds of imports at
    start-up): imported while the API server and the node work on the upgrade and start
    the command, instead of before the request goes out."""
    import hatchway.protocol.handshake
    import hatchway.session.client
    import hatchway.transport.websocket  # noqa: F401


async def open_session(
    rest: RestClient,
    namespace: str,
    pod: str,
    options: ExecOptions,
    *,
    transport: str = "auto",
) -> ClientSession:
    """Upgrade, open the streams, and return the session (WebSocket first, then SPDY)."""
    options = options.normalised()
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/{options.action}"
    query = exec_options.query_pairs(options, exec_options.APISERVER)
    if transport not in {"auto", "websocket", "spdy"}:
        raise ValueError(f"unknown transport {transport!r}")
    conn: Connection
    if transport == "spdy":
        conn = await _connect_spdy(rest, path, query)
    else:
        try:
            conn = await _connect_websocket(rest, path, query, websocket_offer(options))
        except (ApiError, HandshakeError):
            if transport == "websocket":
                raise
            conn = await _connect_spdy(rest, path, query)
    from hatchway.session.client import ClientSession

    session = ClientSession(conn, options)
    try:
        await session.start()
    except BaseException:
        conn.abort()
        raise
    return session


class StreamReader:
    """Output of the remote process: ``read()``, ``readexactly``-free, ``read_all``."""

    def __init__(self, stream: Stream | None) -> None:
        self._stream = stream

    async def read(self, n: int = 65536) -> bytes:
        if self._stream is None:
            return b""
        return await self._stream.read(n)

    async def read_all(self, limit: int = 1 << 30) -> bytes:
        if self._stream is None:
            return b""
        return await self._stream.read_all(limit)


class StreamWriter:
    """Input of the remote process."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session

    async def write(self, data: bytes) -> None:
        await self._session.write_stdin(data)

    async def write_eof(self) -> None:
        await self._session.close_stdin()


class RemoteProcess:
    """A command running in a container, shaped like asyncio's Process."""

    def __init__(self, session: ClientSession, command: Sequence[str]) -> None:
        self._session = session
        self.command = list(command)
        self.stdin = StreamWriter(session)
        self.stdout = StreamReader(session.stdout)
        self.stderr = StreamReader(session.stderr)
        self.returncode: int | None = None
        self.protocol = session.version

    async def write_eof(self) -> None:
        await self.stdin.write_eof()

    async def resize(self, width: int, height: int) -> None:
        await self._session.resize(width, height)

    async def wait(self) -> int:
        """The exit code. Raises RemoteCommandError when the server reported a failure
        without one."""
        if self.returncode is None:
            self.returncode = await self._session.wait()
        return self.returncode

    async def close(self) -> None:
        await self._session.close()

    def terminate(self) -> None:
        """Drop the session: the server kills the remote process tree."""
        self._session.conn.abort()

    async def __aenter__(self) -> RemoteProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def create_process(
    rest: RestClient,
    namespace: str,
    pod: str,
    command: Sequence[str],
    *,
    container: str = "",
    stdin: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    transport: str = "auto",
) -> RemoteProcess:
    options = ExecOptions(tuple(command), container, stdin, stdout, stderr, tty)
    session = await open_session(rest, namespace, pod, options, transport=transport)
    return RemoteProcess(session, command)


async def run(
    rest: RestClient,
    namespace: str,
    pod: str,
    command: Sequence[str],
    *,
    container: str = "",
    input: bytes | None = None,
    check: bool = False,
    tty: bool = False,
    transport: str = "auto",
) -> ExecResult:
    """Run ``command`` to completion and collect its output."""
    process = await create_process(
        rest,
        namespace,
        pod,
        command,
        container=container,
        stdin=input is not None,
        tty=tty,
        transport=transport,
    )
    async with process:

        async def feed() -> None:
            if input is not None:
                if input:
                    await process.stdin.write(input)
                await process.stdin.write_eof()

        feeder = asyncio.ensure_future(feed())
        out, err = await asyncio.gather(process.stdout.read_all(), process.stderr.read_all())
        with contextlib.suppress(Exception):
            await feeder
        code = await process.wait()
    result = ExecResult(list(command), code, out, err)
    if check and code != 0:
        raise ExecError(list(command), code, out, err)
    return result

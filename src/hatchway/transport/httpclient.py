"""HTTP/1.1 client on h11: plain requests with keep-alive, streamed bodies (watch, log
follow), and upgrades that hand over the raw connection without losing a byte.

Redirects are never followed (CVE-2020-8559: a node must not be able to send the API
server's credentials elsewhere). Header names and values are checked on the way out, so
a CR or LF from a caller can never inject a header or a request.

:mod:`hatchway.transport.http` re-exports everything public here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import h11

from hatchway.errors import ConnectionClosedError, HatchwayError, ProtocolError
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.httpurl import (  # noqa: F401  (re-exported)
    MAX_REFUSAL_BODY,
    MAX_RESPONSE_BODY,
    MAX_RESPONSE_HEAD,
    USER_AGENT,
    HeaderInjectionError,
    HeadersIn,
    Origin,
    check_header,
    check_headers,
    parse_url,
)

POOL_IDLE_SECONDS = 30.0
POOL_PER_KEY = 8
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class HeadersMixin:
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        return next((v for n, v in self.headers if n == name), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name``, in order."""
        name = name.lower()
        return [v for n, v in self.headers if n == name]


def decode_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """h11 headers (lower-case names) as text."""
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]


# Plain classes rather than dataclasses: building a dataclass costs about a millisecond
# at import, and every ``hatchway exec`` imports this module.
class ClientResponse(HeadersMixin):
    """A whole response: status, reason, headers (lower-case names), body."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = [] if headers is None else headers
        self.body = body

    def _fields(self) -> tuple[Any, ...]:
        return (self.status, self.reason, self.headers, self.body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientResponse):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ClientResponse(status={self.status!r}, reason={self.reason!r}, "
            f"headers={self.headers!r}, body={self.body!r})"
        )


def _request_headers(
    origin: Origin, method: str, headers: HeadersIn, body: bytes
) -> list[tuple[bytes, bytes]]:
    out = check_headers(headers)
    names = {n.lower() for n, _ in out}
    if b"host" not in names:
        out.insert(0, (b"Host", origin.host_header.encode("ascii")))
    if b"user-agent" not in names:
        out.append((b"User-Agent", USER_AGENT.encode()))
    if b"content-length" not in names and b"transfer-encoding" not in names:
        if body or method in ("POST", "PUT", "PATCH"):
            out.append((b"Content-Length", str(len(body)).encode()))
    return out


class _Conn:
    """One client connection: the socket and its h11 state."""

    def __init__(self, stream: ByteStream, key: tuple[Any, ...]) -> None:
        self.stream = stream
        self.key = key
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.reused = False
        self.idle_since = 0.0

    @property
    def usable(self) -> bool:
        return (
            self.h11.our_state is h11.IDLE
            and self.h11.their_state is h11.IDLE
            and not self.stream.is_closing
            and not self.stream.at_eof
            and self.stream.buffered == 0
        )

    async def next_event(self) -> h11.Event:
        eof = False
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if eof:  # closed mid-message (h11 calls that a protocol error)
                    raise ConnectionClosedError("server closed the connection") from exc
                raise ProtocolError(f"bad HTTP response: {exc}") from exc
            if event is h11.NEED_DATA:
                data = await self.stream.read()
                eof = not data
                self.h11.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionClosedError("server closed the connection")
            return event

    async def read_head(self) -> h11.Response | h11.InformationalResponse:
        while True:
            event = await self.next_event()
            if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                continue  # 100 Continue and friends
            assert isinstance(event, h11.Response | h11.InformationalResponse)
            return event

    async def read_body(self, limit: int, *, truncate: bool = False) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self.next_event()
            if isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    if truncate:
                        parts.append(bytes(event.data[: limit - size + len(event.data)]))
                        raise _Truncated(b"".join(parts))
                    raise ProtocolError(f"response body larger than {limit} bytes")
                parts.append(bytes(event.data))


class _Stale(HatchwayError):
    """A kept-alive connection was found closed before any answer to a request."""


class _Truncated(HatchwayError):
    def __init__(self, body: bytes) -> None:
        self.body = body


def _response(event: h11.Response | h11.InformationalResponse, body: bytes = b"") -> ClientResponse:
    return ClientResponse(
        event.status_code,
        event.reason.decode("latin-1"),
        decode_headers(event.headers),
        body,
    )


class StreamingResponse(HeadersMixin):
    """A response whose body arrives as it comes: ``async for chunk in response``.

    Use as an async context manager, or call :meth:`aclose`; a body read to its end
    returns the connection to the pool.
    """

    def __init__(self, client: HttpClient, conn: _Conn, head: ClientResponse) -> None:
        self.status = head.status
        self.reason = head.reason
        self.headers = head.headers
        self._client = client
        self._conn: _Conn | None = conn

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                self._conn = None
                self._client._release(conn)
                return
            if isinstance(event, h11.Data) and event.data:
                yield bytes(event.data)

    def iter_body(self) -> AsyncIterator[bytes]:
        """The body chunk by chunk (the same as ``async for chunk in response``)."""
        return self.__aiter__()

    async def read(self, limit: int = MAX_RESPONSE_BODY) -> bytes:
        """The rest of the body, at most ``limit`` bytes."""
        conn = self._conn
        if conn is None:
            return b""
        try:
            body = await conn.read_body(limit)
        except BaseException:
            await self.aclose()
            raise
        self._conn = None
        self._client._release(conn)
        return body

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.stream.abort()

    async def __aenter__(self) -> StreamingResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


#: Makes a connection: ``(host, port, ssl context or None, timeout) -> ByteStream``.
Connect = Callable[[str, int, Any, float | None], Awaitable[ByteStream]]


async def _connect_tcp(host: str, port: int, ctx: Any, timeout: float | None) -> ByteStream:
    return await ByteStream.connect(host, port, ssl=ctx, timeout=timeout)


def connect_as(server_name: str) -> Connect:
    """TCP, with TLS for https whose certificate is checked against ``server_name`` (also
    sent as SNI) rather than the URL's host: kubeconfig's ``tls-server-name``."""

    async def dial(host: str, port: int, ctx: Any, timeout: float | None) -> ByteStream:
        name = server_name if ctx is not None else None
        return await ByteStream.connect(host, port, ssl=ctx, server_hostname=name, timeout=timeout)

    return dial


class HttpClient:
    """HTTP/1.1 client with a keep-alive pool per (scheme, host, port, ssl context)."""

    def __init__(
        self, *, user_agent: str = USER_AGENT, pool: bool = True, connect: Connect | None = None
    ) -> None:
        """``connect``: how a connection is made (default: TCP, with TLS for https;
        tests pass :mod:`.memory`'s pairs)."""
        self.user_agent = user_agent
        self._pool_enabled = pool
        self._pool: dict[tuple[Any, ...], list[_Conn]] = {}
        self.connect_seconds = 0.0  # spent in TCP and TLS handshakes, all connections
        self._dial: Connect = connect or _connect_tcp

    # -- connections -----------------------------------------------------------------------
    @staticmethod
    def _context(origin: Origin, ssl: ssl_module.SSLContext | None) -> Any:
        if origin.scheme == "https":
            return ssl if ssl is not None else ssl_module.create_default_context()
        return None

    async def _connect(
        self, origin: Origin, ssl: ssl_module.SSLContext | None, timeout: float | None
    ) -> _Conn:
        ctx = self._context(origin, ssl)
        key = (origin.scheme, origin.host, origin.port, ctx)
        started = time.perf_counter()
        stream = await self._dial(origin.host, origin.port, ctx, timeout)
        self.connect_seconds += time.perf_counter() - started
        return _Conn(stream, key)

    def _checkout(self, origin: Origin, ssl: ssl_module.SSLContext | None) -> _Conn | None:
        key = (origin.scheme, origin.host, origin.port, self._context(origin, ssl))
        conns = self._pool.get(key, [])
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if conn.usable and now - conn.idle_since < POOL_IDLE_SECONDS:
                conn.reused = True
                return conn
            conn.stream.abort()
        return None

    def _release(self, conn: _Conn) -> None:
        if not self._pool_enabled:
            conn.stream.close()
            return
        with contextlib.suppress(h11.LocalProtocolError):
            conn.h11.start_next_cycle()
        conns = self._pool.setdefault(conn.key, [])
        if conn.usable and len(conns) < POOL_PER_KEY:
            conn.idle_since = time.monotonic()
            conns.append(conn)
        else:
            conn.stream.close()

    async def close(self) -> None:
        """Close every pooled connection."""
        for conns in self._pool.values():
            for conn in conns:
                conn.stream.close()
        self._pool.clear()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- requests -------------------------------------------------------------------------
    def _events(
        self, origin: Origin, method: str, headers: HeadersIn, body: bytes
    ) -> tuple[h11.Request, list[tuple[bytes, bytes]]]:
        hdrs = _request_headers(origin, method, headers, body)
        if self.user_agent != USER_AGENT:
            hdrs = [
                (n, self.user_agent.encode()) if n == b"User-Agent" else (n, v) for n, v in hdrs
            ]
        try:
            request = h11.Request(method=method, target=origin.target, headers=hdrs)
        except h11.LocalProtocolError as exc:
            raise HeaderInjectionError(str(exc)) from exc
        return request, hdrs

    async def _send(
        self,
        method: str,
        url: str,
        headers: HeadersIn,
        body: bytes,
        ssl: ssl_module.SSLContext | None,
        timeout: float | None,
    ) -> tuple[_Conn, h11.Response | h11.InformationalResponse]:
        """Send a request on a pooled or new connection; the response head."""
        method = method.upper()
        origin = parse_url(url)
        request, _ = self._events(origin, method, headers, body)
        for _attempt in range(2):
            conn = self._checkout(origin, ssl) if self._pool_enabled else None
            fresh = conn is None
            async with asyncio.timeout(timeout):
                if conn is None:
                    conn = await self._connect(origin, ssl, timeout)
                try:
                    self._write_request(conn, request, body)
                    return conn, await conn.read_head()
                except (ConnectionClosedError, OSError):
                    conn.stream.abort()
                    # A kept-alive connection the server closed meanwhile: retry once on
                    # a fresh one if the request is safe to repeat.
                    if fresh or method not in IDEMPOTENT:
                        raise
                except BaseException:
                    conn.stream.abort()
                    raise
        raise ConnectionClosedError("server closed the connection")  # pragma: no cover

    @staticmethod
    def _write_request(conn: _Conn, request: h11.Request, body: bytes, early: bytes = b"") -> None:
        parts = [conn.h11.send(request) or b""]
        if body:
            parts.append(conn.h11.send(h11.Data(data=body)) or b"")
        parts.append(conn.h11.send(h11.EndOfMessage()) or b"")
        if early:
            parts.append(early)
        conn.stream.write(b"".join(parts))

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: HeadersIn = None,
        body: bytes = b"",
        ssl: ssl_module.SSLContext | None = None,
        timeout: float | None = 30.0,
        max_body: int = MAX_RESPONSE_BODY,
    ) -> ClientResponse:
        """Send a request and read the whole response. Redirects are returned as-is."""
        async with asyncio.timeout(timeout):  # one deadline for the whole exchange
            conn, head = await self._send(method, url, headers, body, ssl, timeout)
            try:
                data = await conn.read_body(max_body)
            except BaseException:
                conn.stream.abort()
                raise
        self._release(conn)
        return _response(head, data)

    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: HeadersIn = None,
        body: bytes = b"",
        ssl: ssl_module.SSLContext | None = None,
        timeout: float | None = 30.0,
    ) -> StreamingResponse:
        """Send a request; the response with its body still to be read (``timeout``
        covers only connecting and the response head)."""
        conn, head = await self._send(method, url, headers, body, ssl, timeout)
        return StreamingResponse(self, conn, _response(head))

    async def upgrade(
        self,
        method: str,
        url: str,
        *,
        headers: HeadersIn = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float | None = 30.0,
        early_data: bytes = b"",
    ) -> tuple[ClientResponse, ByteStream | None]:
        """Send an upgrade request, on a kept-alive pooled connection when there is one
        (one TLS handshake fewer), else on a new connection.

        On 101 returns the response and the raw connection, with any bytes read past the
        101 pushed back into it. Otherwise reads at most 64 KiB of body, closes, and
        returns ``(response, None)``. ``early_data`` is written in the same write as the
        request (the peer must be ready for it).
        """
        origin = parse_url(url)
        request, _ = self._events(origin, method.upper(), headers, b"")
        async with asyncio.timeout(timeout):
            conn = self._checkout(origin, ssl) if self._pool_enabled else None
            if conn is not None:
                try:
                    return await self._upgrade_on(conn, request, early_data)
                except _Stale:
                    pass  # the server closed it while idle, before any answer: retry
            conn = await self._connect(origin, ssl, timeout)
            return await self._upgrade_on(conn, request, early_data)

    async def _upgrade_on(
        self, conn: _Conn, request: h11.Request, early_data: bytes
    ) -> tuple[ClientResponse, ByteStream | None]:
        answered = False
        try:
            try:
                self._write_request(conn, request, b"", early_data)
                head = await conn.read_head()
            except (ConnectionClosedError, OSError) as exc:
                if conn.reused:
                    raise _Stale() from exc
                raise
            answered = True
            if head.status_code == 101:
                trailing, _ = conn.h11.trailing_data
                conn.stream.unread(bytes(trailing))
                return _response(head), conn.stream
            try:
                body = await conn.read_body(MAX_REFUSAL_BODY, truncate=True)
            except _Truncated as cut:
                body = cut.body
            except (ConnectionClosedError, ProtocolError):
                body = b""
        finally:
            if conn.h11.their_state is not h11.SWITCHED_PROTOCOL:
                if answered:
                    conn.stream.close()
                else:
                    conn.stream.abort()
        return _response(head, body), None


async def request(method: str, url: str, **kwargs: Any) -> ClientResponse:
    """One request on a connection of its own; see :meth:`HttpClient.request`."""
    return await HttpClient(pool=False).request(method, url, **kwargs)


async def upgrade(method: str, url: str, **kwargs: Any) -> tuple[ClientResponse, ByteStream | None]:
    """See :meth:`HttpClient.upgrade`."""
    return await HttpClient(pool=False).upgrade(method, url, **kwargs)


async def stream(method: str, url: str, **kwargs: Any) -> StreamingResponse:
    """See :meth:`HttpClient.stream`; the connection closes with the response."""
    return await HttpClient(pool=False).stream(method, url, **kwargs)


#: The name :mod:`hatchway.rest` uses for :func:`stream`.
stream_request = stream

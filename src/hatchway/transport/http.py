"""HTTP/1.1 server on h11, with keep-alive, bounded requests and upgrade hand-off.

An application is ``async def app(request: Request) -> Response``. A ``Response`` with
status 101 and an ``upgrade`` callable switches protocols: the server writes the 101
head with exactly the headers given, pushes every byte it had read past the request back
into the :class:`ByteStream` (h11 holds them as trailing data: a client may send its
first frames in the same segment as the request), and hands the stream over. Nothing
of the upgrade request's body is read beyond its Content-Length.

Everything a peer sends is bounded (:class:`HttpLimits`); a peer that breaks the
protocol gets a 4xx and a closed connection, and an application that raises gets a 500
-- neither takes the server down. Connections are bounded per server (503 beyond) and
per source address (429 beyond), and those kept alive idle in number (the longest idle
closed beyond ``max_idle_connections``, :mod:`.keepalive`).

A request is read in two phases: its head, which the server's ``check_head`` (the
API server's authentication) sees first, then -- only if ``check_head`` let it pass --
its body, bounded by ``max_body``, before the application is called. A refused
request's body is never held in memory: it is answered, and what the client still
sends is discarded while lingering, then the connection is closed.

The client side lives in :mod:`.httpclient` and is re-exported here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl as ssl_module
import time
from collections.abc import AsyncIterator

import h11

from hatchway.errors import ConnectionClosedError, HatchwayError
from hatchway.transport import phases
from hatchway.transport.bytestream import RECV_HIGH, ByteStream, Server
from hatchway.transport.httpclient import (
    ClientResponse,
    HeaderInjectionError,
    HttpClient,
    StreamingResponse,
    check_headers,
    parse_url,
    request,
    stream,
    stream_request,
    upgrade,
)
from hatchway.transport.httpmessage import (
    App,
    CheckHead,
    HttpLimits,
    Request,
    Response,
    Upgrade,
    build_request,
    has_body,
    plain_response,
    reason_phrase,
)
from hatchway.transport.keepalive import IdleConnections

__all__ = [
    "App",
    "CheckHead",
    "ClientResponse",
    "HeaderInjectionError",
    "HttpClient",
    "HttpLimits",
    "HttpServer",
    "Request",
    "Response",
    "StreamingResponse",
    "Upgrade",
    "parse_url",
    "request",
    "stream",
    "stream_request",
    "upgrade",
]

log = logging.getLogger(__name__)


class _Refused(HatchwayError):
    """The request is refused before the application sees it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Exchange:
    """One connection: reads requests, calls the application, writes responses."""

    def __init__(
        self,
        app: App,
        limits: HttpLimits,
        stream: ByteStream,
        check_head: CheckHead | None,
        idle: IdleConnections | None = None,
        timing: str = "",
    ) -> None:
        self.app = app
        #: The server's name in timing lines; "" when requests are not timed.
        self.timing = timing
        #: When the previous request on the connection ended (wall, thread CPU).
        self._since = (0, 0)
        self.limits = limits
        self.stream = stream
        self.check_head = check_head
        self.idle = idle
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)
        self._upgraded = False
        #: Set once a 101 is written: what runs the connection next (:meth:`run` returns).
        self.upgrade: _Switched | None = None

    async def _event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.read())

    async def _head_event(self) -> h11.Event:
        """The next event, refusing a head over the limit even when it arrived whole
        (h11 bounds only what is still incomplete)."""
        while True:
            before = len(self.conn.trailing_data[0])
            event = self.conn.next_event()
            if isinstance(event, h11.Request):
                if before - len(self.conn.trailing_data[0]) > self.limits.max_head:
                    raise _Refused(431, "request head too large")
                return event
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.read())

    async def _wait_first_byte(self, first: bool) -> bool:
        """Wait for the start of the next request; False on EOF or idle timeout."""
        if self.conn.trailing_data[0]:
            return True
        timeout = self.limits.head_timeout if first else self.limits.idle_timeout
        idle = None if first else self.idle
        try:
            async with asyncio.timeout(timeout):
                if idle is not None:  # kept alive: one of the bounded idle connections
                    idle.add(self, self._request_arrived, self.stream.close)
                try:
                    data = await self.stream.read()
                finally:
                    if idle is not None:
                        idle.discard(self)
        except TimeoutError:
            return False
        self.conn.receive_data(data)
        return bool(data)

    def _request_arrived(self) -> bool:
        return self.stream.buffered > 0 or self.stream.at_eof

    async def read_head(self, first: bool) -> tuple[h11.Request, Request] | None:
        """The next request's head, and the request without its body."""
        # Until the head has passed check_head, buffer little of what follows it.
        self.stream.set_recv_limit(self.limits.max_head)
        if not await self._wait_first_byte(first):
            return None
        try:
            async with asyncio.timeout(self.limits.head_timeout):
                event = await self._head_event()
        except TimeoutError:
            raise _Refused(408, "request head timed out") from None
        except h11.RemoteProtocolError as exc:
            raise _Refused(exc.error_status_hint, f"bad request: {exc}") from None
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        if len(event.headers) > self.limits.max_headers:
            raise _Refused(431, "too many header fields")
        req = build_request(event, b"", self.stream)
        if self.timing:
            if first:
                since, since_cpu = self.stream.made_ns, self.stream.made_cpu_ns
            else:
                since, since_cpu = self._since
            timed = phases.Phases(self.timing, req.path, since, since_cpu, first=first)
            timed.mark("head")
            req.context[phases.KEY] = timed
        return event, req

    async def read_body(self, event: h11.Request) -> bytes:
        self.stream.set_recv_limit(RECV_HIGH)
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                return await self._read_body(event)
        except TimeoutError:
            raise _Refused(408, "request body timed out") from None
        except h11.RemoteProtocolError as exc:
            raise _Refused(exc.error_status_hint, f"bad request body: {exc}") from None

    async def _read_body(self, event: h11.Request) -> bytes:
        for name, value in event.headers:
            if name == b"content-length" and int(value) > self.limits.max_body:
                raise _Refused(413, "request body too large")
        if self.conn.they_are_waiting_for_100_continue:
            self.stream.write(self.conn.send(h11.InformationalResponse(status_code=100)) or b"")
        parts: list[bytes] = []
        size = 0
        while True:
            ev = await self._event()
            if isinstance(ev, h11.EndOfMessage):
                return b"".join(parts)
            if isinstance(ev, h11.ConnectionClosed):
                raise ConnectionClosedError("client closed mid-request")
            if isinstance(ev, h11.Data):
                size += len(ev.data)
                if size > self.limits.max_body:
                    raise _Refused(413, "request body too large")
                parts.append(bytes(ev.data))

    async def call_app(self, req: Request) -> Response:
        try:
            return await self.app(req)
        except Exception:
            log.exception("request handler failed: %s %s", req.method, req.raw_path)
            return plain_response(500, "Internal Server Error")

    async def respond(self, req: Request, resp: Response) -> bool:
        """Send ``resp``; whether the connection may serve another request. A streamed
        body is closed on every path (a HEAD, a client gone before the head), so what
        it holds -- a node connection, a follow-log slot -- is let go."""
        if resp.abandon is None and resp.body_iter is None:
            return await self._respond(req, resp)
        self._upgraded = False
        try:
            return await self._respond(req, resp)
        finally:
            if resp.abandon is not None and not self._upgraded:
                try:
                    resp.abandon()
                except Exception:
                    log.exception("abandoning an upgrade failed: %s %s", req.method, req.path)
            if resp.body_iter is not None:
                await _aclose(resp.body_iter)

    async def _respond(self, req: Request, resp: Response) -> bool:
        if resp.status == 101:
            return await self._switch(req, resp)
        try:
            head = self._head(req, resp)
        except (HeaderInjectionError, h11.LocalProtocolError, ValueError):
            log.exception("application produced an invalid response head")
            resp = plain_response(500, "Internal Server Error")
            head = self._head(req, resp)
        self.stream.write(self.conn.send(head) or b"")
        if req.method != "HEAD":
            if resp.body_iter is not None:
                if not await self._stream_body(resp.body_iter):
                    return False
            elif resp.body:
                self.stream.write(self.conn.send(h11.Data(data=resp.body)) or b"")
        self.stream.write(self.conn.send(h11.EndOfMessage()) or b"")
        await self.stream.drain()
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def _head(self, req: Request, resp: Response) -> h11.Response:
        headers = [
            (n, v)
            for n, v in check_headers(resp.headers)
            if n.lower() not in (b"content-length", b"transfer-encoding")
        ]
        if resp.body_iter is None:
            headers.append((b"Content-Length", str(len(resp.body)).encode()))
        if self.conn.their_state is h11.MIGHT_SWITCH_PROTOCOL or req.is_upgrade:
            # A refused upgrade: the client may already have sent bytes of the next
            # protocol, which must never be parsed as HTTP. Close after the answer.
            headers.append((b"Connection", b"close"))
        reason = resp.reason if resp.reason is not None else reason_phrase(resp.status)
        return h11.Response(status_code=resp.status, headers=headers, reason=reason.encode())

    async def _stream_body(self, body: AsyncIterator[bytes]) -> bool:
        """Send a chunked body until it ends; False if the client went away first."""

        async def pump() -> None:
            async for chunk in body:
                if chunk:
                    self.stream.write(self.conn.send(h11.Data(data=chunk)) or b"")
                    await self.stream.drain()

        pumping = asyncio.ensure_future(pump())
        gone = asyncio.ensure_future(self.stream.wait_closed())
        try:
            await asyncio.wait({pumping, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not pumping.done():
                return False
            pumping.result()
            return True
        finally:
            for task in (pumping, gone):
                task.cancel()
            await asyncio.gather(pumping, gone, return_exceptions=True)
            await _aclose(body)

    async def _switch(self, req: Request, resp: Response) -> bool:
        if resp.upgrade is None or self.conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
            log.error("101 answered to %s %s, which proposed no upgrade", req.method, req.path)
            return await self._respond(req, plain_response(500, "Internal Server Error"))
        try:
            headers = check_headers(resp.headers)
            event = h11.InformationalResponse(
                status_code=101, headers=headers, reason=(resp.reason or "Switching Protocols")
            )
        except (HeaderInjectionError, h11.LocalProtocolError):
            log.exception("application produced an invalid 101 head")
            return await self._respond(req, plain_response(500, "Internal Server Error"))
        self.stream.write(self.conn.send(event) or b"")
        trailing, _ = self.conn.trailing_data
        self.stream.unread(bytes(trailing))
        self._upgraded = True  # from here the callback owns what it was given
        # A streaming session now, no longer a request: a peer still reading its output
        # is given the streaming idle timeout, not the keep-alive one (the callback may
        # set its own, as the API server's splice does).
        self.stream.drain_idle_timeout = self.limits.stream_idle_timeout
        # The callback runs once the request's frames have returned (HttpServer._handle):
        # for as long as the session lasts, nothing holds the request, its headers or
        # this connection's h11 state (only its phase timer, when timing is on).
        timed = phases.of(req.context)
        timed.mark("switch")
        self.upgrade = _Switched(resp.upgrade, f"{req.method} {req.raw_path}", timed)
        return False

    async def refuse(self, refused: _Refused) -> None:
        """Answer a request that broke a limit or the protocol, and close."""
        body = (str(refused) + "\n").encode()
        retry = "Retry-After: 1\r\n" if refused.status in (429, 503) else ""
        head = (
            f"HTTP/1.1 {refused.status} {reason_phrase(refused.status)}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n{retry}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionClosedError, OSError):
            self.stream.write(head + body)
            await self.stream.drain()
            await self._linger()

    async def _linger(self) -> None:
        """Swallow what the client is still sending, for a while and up to a bound:
        closing with unread data would reset the connection and lose our answer."""
        self.stream.write_eof()
        budget = 4 * self.limits.max_body + self.limits.max_head
        quiet = min(self.limits.linger_quiet, self.limits.linger)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.limits.linger):
                while budget > 0:
                    # A client that has stopped sending has nothing left to lose.
                    data = await asyncio.wait_for(self.stream.read(), quiet)
                    if not data:
                        return
                    budget -= len(data)

    async def _check(self, req: Request) -> Response | None:
        if self.check_head is None:
            return None
        try:
            return await self.check_head(req)
        except Exception:
            log.exception("request head check failed: %s %s", req.method, req.raw_path)
            return plain_response(500, "Internal Server Error")

    async def next_request(self, first: bool) -> tuple[Request, Response | None] | None:
        """The next request, and ``check_head``'s answer if it refused it (then the
        request's body, if any, has not been read)."""
        head = await self.read_head(first)
        if head is None:
            return None
        event, req = head
        refusal = await self._check(req)
        timed = phases.of(req.context)
        timed.mark("authn")
        if refusal is None or not has_body(event):
            req.body = await self.read_body(event)
            timed.mark("body")
        return req, refusal

    async def refuse_unread(self, req: Request, resp: Response) -> None:
        """Answer a request whose body is still unread, then linger and close: the
        body is discarded as it comes, never held."""
        resp.headers = [*resp.headers, ("Connection", "close")]
        with contextlib.suppress(ConnectionClosedError, OSError):
            await self.respond(req, resp)
            await self._linger()

    async def run(self) -> None:
        first = True
        while True:
            try:
                got = await self.next_request(first)
            except _Refused as refused:
                await self.refuse(refused)
                return
            except ConnectionClosedError:
                return
            if got is None:
                return
            req, resp = got
            if resp is not None and self.conn.their_state is h11.SEND_BODY:
                await self.refuse_unread(req, resp)
                return
            if resp is None:
                resp = await self.call_app(req)
            timed = phases.of(req.context)
            timed.mark("app")
            try:
                if not await self.respond(req, resp):
                    return
            finally:
                if resp.upgrade is None:  # an upgrade's callback finishes its own
                    timed.mark("respond")
                    timed.finish()
            self.conn.start_next_cycle()
            if self.timing:
                self._since = time.perf_counter_ns(), time.thread_time_ns()
            first = False


class _Switched:
    """A connection whose 101 is written: the application's callback, to run on it."""

    def __init__(self, callback: Upgrade, what: str, timed: phases.Timer) -> None:
        self.callback = callback
        #: Method and path of the upgrade request, for the log.
        self.what = what
        self.timed = timed

    async def run(self, stream: ByteStream) -> None:
        try:
            await self.callback(stream)
        except Exception:
            log.exception("upgrade handler failed: %s", self.what)
        self.timed.mark("upgraded")
        await stream.aclose()
        self.timed.mark("close")
        self.timed.finish()


async def _aclose(body: AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class HttpServer:
    """Serves ``app`` over HTTP/1.1 (TLS when given a context), keep-alive, bounded.
    ``check_head`` sees each request before its body is read (module docstring)."""

    def __init__(
        self,
        app: App,
        *,
        limits: HttpLimits | None = None,
        check_head: CheckHead | None = None,
        name: str = "server",
    ) -> None:
        self.app = app
        #: Requests are timed (:mod:`.phases`) when the environment asks at start.
        self.timing = name if phases.enabled() else ""
        self.limits = limits or HttpLimits()
        self.check_head = check_head
        # A connection closed after its answer waits as long as a keep-alive one would
        # for a client that reads nothing of it.
        self._server = Server(self._handle, self.limits.idle_timeout)
        #: Kept-alive connections waiting for a request, at most ``max_idle_connections``.
        self.idle = IdleConnections(self.limits.max_idle_connections)
        #: Open connections, in total and by source address (refused ones not counted).
        self.connections = 0
        self.by_source: collections.Counter[str] = collections.Counter()

    def _admit(self, source: str) -> _Refused | None:
        if self.connections >= self.limits.max_connections:
            return _Refused(503, "Too many connections, please try again later.")
        if self.by_source[source] >= self.limits.max_connections_per_source:
            # Kubernetes' wording when it sheds load (its max-in-flight filter).
            return _Refused(429, "Too many requests, please try again later.")
        return None

    async def _handle(self, stream: ByteStream) -> None:
        peer = stream.peername
        source = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        exchange = _Exchange(
            self.app, self.limits, stream, self.check_head, self.idle, timing=self.timing
        )
        refused = self._admit(source)
        if refused is not None:
            stream.set_recv_limit(self.limits.max_head)
            await exchange.refuse(refused)
            return
        self.connections += 1
        self.by_source[source] += 1
        try:
            await exchange.run()
            switched = exchange.upgrade
            del exchange  # the request's HTTP state: nothing an upgraded connection needs
            if switched is not None:
                await switched.run(stream)
        except (ConnectionClosedError, ConnectionError, ssl_module.SSLError):
            stream.abort()
        except h11.ProtocolError:
            log.warning("HTTP protocol error", exc_info=True)
            stream.abort()
        finally:
            self.connections -= 1
            self.by_source[source] -= 1
            if self.by_source[source] <= 0:
                del self.by_source[source]

    async def start(self, host: str, port: int, ssl: ssl_module.SSLContext | None = None) -> None:
        await self._server.start(host, port, ssl=ssl)

    async def serve(self, stream: ByteStream) -> None:
        """Serve one connection made another way than by listening (an in-memory pair
        of :mod:`.memory`), as an accepted one is served."""
        stream.drain_idle_timeout = self._server.drain_idle_timeout
        await self._server.serve(stream)

    @property
    def port(self) -> int:
        return self._server.port

    async def close(self) -> None:
        await self._server.close()

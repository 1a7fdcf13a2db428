"""The upgrade-aware exec/attach proxy: dial the node, and splice only after its 101.

The rules (protocol.md 2.2-2.3; kubernetes ``pkg/util/proxy/upgradeaware.go``):

* The caller is authenticated, authorised and admitted before :meth:`ExecProxy.dial`.
* The request goes to the node over mutual TLS with the API server's kubelet-client
  certificate, the node's certificate verified against the cluster CA. With an
  :class:`~hatchway.transport.http.HttpClient` given (the server shares the outcome
  client's, :mod:`.outcome`), the upgrade is sent on a connection to that node kept
  alive after an earlier plain request, when there is one: the TCP and TLS handshakes
  are then off the session's critical path. The upgrade takes the connection out of
  the pool for good (an upgraded connection is never returned to it), so no two
  sessions ever share one; a kept-alive connection the node closed meanwhile is
  replaced by a new one before any answer (the node never saw the request). Method and
  headers are kept (``Connection``, ``Upgrade``, ``X-Stream-Protocol-Version``,
  ``Sec-WebSocket-*``), ``Authorization`` and impersonation headers dropped, the
  caller's address appended to ``X-Forwarded-For``, the API server's request id sent
  as ``Audit-ID`` (the caller's own dropped).
* Only a 101 from the node makes a 101 to the client, with the node's headers. A node
  answer of 400 or more is relayed (status, headers, body) and both connections are
  closed: no later client byte can reach the node (CVE-2018-1002105). Anything else --
  a redirect among them -- is a 500 ``invalid upgrade response`` and nothing is
  followed (CVE-2020-8559).
* The splice (:class:`~hatchway.transport.bytestream.Splice`) writes what one
  connection receives to the other from the event loop's callback, pausing reading on
  one side while the other's send buffer is above 256 KiB. It closes both sides as soon
  as either ends (TLS cannot half-close), each after what is still queued for it has
  been delivered -- for as long as that peer keeps reading; one that takes nothing for
  ``idle_timeout`` is cut, and :attr:`SpliceStats.error` says so -- or aborts both when
  nothing moved for ``idle_timeout``. It never parses the stream.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hatchway.api import status
from hatchway.api.status import StatusError
from hatchway.errors import HatchwayError
from hatchway.transport import http
from hatchway.transport.bytestream import ByteStream, Splice
from hatchway.transport.httpclient import HeaderInjectionError, check_headers

#: Request headers that never go to the node.
DROPPED_REQUEST_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "host", "content-length", "transfer-encoding"}
)
DROPPED_PREFIXES = ("impersonate-",)
#: Response headers of the node that the HTTP layer sets itself.
DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass
class SpliceStats:
    """What went through one session, for the audit end record."""

    bytes_to_node: int = 0
    bytes_to_client: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0
    reason: str = ""
    #: Why the session did not end cleanly ("" when it did), for the audit's ``error``.
    error: str = ""

    @property
    def duration(self) -> float:
        return (self.ended or time.monotonic()) - self.started


def forward_headers(
    headers: Sequence[tuple[str, str]], peer_address: str, audit_id: str = ""
) -> list[tuple[str, str]]:
    """The client's headers as they go to the node (see module docstring).

    ``Audit-ID`` is the API server's request id, never the client's: the node files the
    session's outcome under it, and a client naming another session's id must not be
    able to make its audit line carry that session's exit code."""
    out: list[tuple[str, str]] = []
    forwarded: list[str] = []
    for name, value in headers:
        low = name.lower()
        if low in DROPPED_REQUEST_HEADERS or low.startswith(DROPPED_PREFIXES):
            continue
        if low == "audit-id":
            continue
        if low == "x-forwarded-for":
            forwarded.append(value)
            continue
        out.append((name, value))
    if peer_address:
        forwarded.append(peer_address)
    if forwarded:
        out.append(("X-Forwarded-For", ", ".join(forwarded)))
    if audit_id:
        out.append(("Audit-ID", audit_id))
    return out


def relay_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The node's response headers as they go back to the client."""
    return [(n, v) for n, v in headers if n.lower() not in DROPPED_RESPONSE_HEADERS]


def _upgrade_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A 101's headers: the node's, with its Connection header kept (it names upgrade)."""
    return [(n, v) for n, v in headers if n.lower() not in ("content-length", "transfer-encoding")]


class ExecProxy:
    """Dials nodes for exec/attach and splices upgraded connections."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        handshake_timeout: float = 30.0,
        idle_timeout: float = 4 * 3600.0,
        http_client: http.HttpClient | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        #: Where kept-alive node connections come from; None: a new one per session.
        self.http_client = http_client
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout

    async def dial(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        client: ByteStream | None = None,
    ) -> tuple[http.ClientResponse, ByteStream | None]:
        """Send the upgrade request; the node's answer, and its stream on 101.

        Raises StatusError (500, as the Kubernetes error responder words it) when the
        node cannot be reached or breaks HTTP. With ``client``, the dial is given up
        as soon as that connection closes: nobody is left to get the 101, and what the
        caller holds for the session (its slot) goes back now, not after the node's
        answer or the handshake timeout."""
        dialing = asyncio.ensure_future(self._dial(method, url, headers))
        if client is None:
            return await dialing
        gone = asyncio.ensure_future(client.wait_closed())
        try:
            done, _ = await asyncio.wait({dialing, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            dialing.cancel()
            gone.cancel()
            raise
        gone.cancel()
        if dialing in done:
            return dialing.result()
        dialing.cancel()
        await asyncio.gather(dialing, return_exceptions=True)
        raise StatusError(status.status(500, "", "error dialing backend: the client went away"))

    async def _dial(
        self, method: str, url: str, headers: list[tuple[str, str]]
    ) -> tuple[http.ClientResponse, ByteStream | None]:
        upgrade = self.http_client.upgrade if self.http_client is not None else http.upgrade
        try:
            return await upgrade(
                method,
                url,
                headers=headers,
                ssl=self.ssl_context,
                timeout=self.handshake_timeout,
            )
        except TimeoutError:
            raise StatusError(
                status.status(500, "", "error dialing backend: handshake timed out")
            ) from None
        except (OSError, ssl.SSLError, HatchwayError) as exc:
            raise StatusError(status.status(500, "", f"error dialing backend: {exc}")) from None

    def refusal(self, answer: http.ClientResponse) -> http.Response:
        """The client's answer when the node did not switch protocols."""
        if answer.status >= 400:
            return http.Response(answer.status, relay_headers(answer.headers), answer.body)
        body = status.internal_error(f"invalid upgrade response: status code {answer.status}")
        return json_response(body)

    def switch(
        self,
        answer: http.ClientResponse,
        node: ByteStream,
        on_end: Callable[[SpliceStats], Awaitable[None]],
        on_abandon: Callable[[], None] | None = None,
    ) -> http.Response:
        """The 101 for the client; its upgrade callback splices until either side ends.

        A 101 whose headers could not be written to the client is refused here
        (StatusError 500). When the HTTP layer runs the callback, it owns the node
        stream and calls ``on_end``; when it never does (the client left before its 101),
        the response's ``abandon`` aborts the node stream -- the node sees its client go
        and kills the process -- and calls ``on_abandon``."""
        headers = _upgrade_headers(answer.headers)
        try:
            check_headers(headers)
        except HeaderInjectionError:
            node.abort()
            raise StatusError(status.internal_error("invalid upgrade response headers")) from None

        def abandon() -> None:
            node.abort()
            if on_abandon is not None:
                on_abandon()

        async def upgrade(client: ByteStream) -> None:
            stats = SpliceStats()
            try:
                stats.reason = await splice(client, node, stats, self.idle_timeout)
            finally:
                stats.ended = time.monotonic()
                await on_end(stats)

        return http.Response(101, headers, upgrade=upgrade, abandon=abandon)


def json_response(body: dict, code: int | None = None) -> http.Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    return http.Response(
        code if code is not None else int(body.get("code") or 500),
        [("Content-Type", "application/json")],
        data,
    )


async def splice(
    client: ByteStream, node: ByteStream, stats: SpliceStats, idle_timeout: float
) -> str:
    """Join both ways until either side ends or the session idles; close both.

    Returns why it ended: ``client``, ``node`` (that side finished or failed first) or
    ``idle``. ``stats`` gets the byte counts, and in ``error`` an idle timeout or a side
    cut for reading nothing of what was queued for it for ``idle_timeout``."""
    joined = Splice(client, node)
    reason = ""
    try:
        joined.start()
        reason = await _until_end(joined, idle_timeout)
        return reason
    finally:
        stats.bytes_to_node, stats.bytes_to_client = joined.sent
        if reason in ("", "idle"):
            # Nothing moved either way for the idle timeout (or we are cancelled).
            client.abort()
            node.abort()
        for stream in (client, node):
            stream.drain_idle_timeout = idle_timeout
        await asyncio.gather(client.aclose(), node.aclose(), return_exceptions=True)
        stats.error = _error(reason, client, node, idle_timeout)


def _error(reason: str, client: ByteStream, node: ByteStream, idle_timeout: float) -> str:
    if reason == "idle":
        return "idle timeout"
    for stream, who, what in ((client, "client", "output"), (node, "node", "input")):
        if stream.cut:
            return (
                f"the {who} stopped reading: {what} not delivered "
                f"(no progress for {idle_timeout:.0f} s, connection cut)"
            )
    return ""


async def _until_end(joined: Splice, idle_timeout: float) -> str:
    """Awaits the splice's own future; one timer, re-armed while bytes move (the
    callbacks only touch ``last_activity``), ends it as idle. No ``asyncio.wait`` per
    session: its frames, waiter and callbacks were ~1.8 KB of every idle session."""
    loop = asyncio.get_running_loop()
    ended = joined.ended
    handle: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal handle
        remaining = joined.last_activity + idle_timeout - time.monotonic()
        if remaining > 0:
            handle = loop.call_later(remaining, check)
        elif not ended.done():
            ended.set_result(_IDLE)

    check()
    try:
        side = await ended
    finally:
        if handle is not None:
            handle.cancel()
    return "idle" if side == _IDLE else ("client", "node")[side]


#: :attr:`Splice.ended`'s result when the idle timer, not a side, ended it.
_IDLE = -1

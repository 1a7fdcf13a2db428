"""The exec upgrade, both sides: from an HTTP request to a started :class:`Connection`.

Client side, :func:`dial`: the upgrade request for an exec/attach path, as kubectl 1.32
makes it (protocol.md 5.8) -- WebSocket first (GET, ``v5.channel.k8s.io``), and on a refused
upgrade the whole request again over SPDY/3.1 (POST), as client-go's fallback executor
does. Nothing is retried once a connection is up.

Server side, :func:`accept`: the answer to an upgrade request -- the 101 whose upgrade
callback wraps the stream in the negotiated driver and hands the connection on, or the
refusal, as the kubelet answers it.

Every header either side writes comes from :mod:`hatchway.protocol.handshake`'s builders,
every version list from :mod:`hatchway.protocol.channel`'s offer tables, and every
answer is judged by ``handshake.check_*``: the byte-exact handshake tests guard what goes
on the wire. Port-forward's upgrade (:func:`dial_port_forward`, :func:`accept_port_forward`)
is made here the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from hatchway.errors import ApiError
from hatchway.protocol import channel, exec_options, handshake
from hatchway.transport.base import Connection
from hatchway.transport.bytestream import ByteStream
from hatchway.transport.httpclient import ClientResponse
from hatchway.types import ExecOptions

if TYPE_CHECKING:
    from hatchway.protocol.spdy import SpdyLimits
    from hatchway.transport.httpmessage import Request, Response

# The drivers (transport.websocket, transport.spdy: tens of milliseconds of imports) are
# imported where a connection is made, once the 101 is in: the server is then starting
# the command, and ``hatchway exec``'s imports overlap with that instead of delaying the
# request (measured with bench/ab.py). Python imports each module once.

TRANSPORTS = ("auto", "websocket", "spdy")
#: kubectl's SPDY ping period (protocol.md 3.7) and WebSocket ping period (5.7).
PING_INTERVAL = 5.0
#: Closing, how long we wait on a server that takes none of what we still send (stdin,
#: our close): the session is over for us, so not the server's hours of idle timeout.
CLOSE_IDLE_TIMEOUT = 30.0
#: What each port-forward stream may hold unread (exec streams: the driver's 1 MiB).
PORT_FORWARD_STREAM_BUFFER = 256 * 1024


class Upgrader(Protocol):
    """What :func:`dial` needs of its REST client (:class:`hatchway.rest.RestClient`):
    send one upgrade request, get the answer and, on 101, the raw stream."""

    async def upgrade(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        *,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[ClientResponse, ByteStream | None]: ...


# -- client side ------------------------------------------------------------------------


def websocket_offer(options: ExecOptions) -> tuple[str, ...]:
    """The WebSocket subprotocols we offer for ``options``.

    With stdin only v5 is offered, as kubectl does (protocol.md 5.1): a pre-1.30 API server
    passes other WebSocket offers through to the kubelet, which would pick v4 -- and v4
    over WebSocket cannot signal stdin EOF, so ``write_eof()`` could never reach the
    command. Refusing v5 there makes the kubelet answer 403, and we fall back to SPDY.
    """
    if options.stdin:
        return channel.WEBSOCKET_CLIENT_PROTOCOLS_STDIN
    return channel.WEBSOCKET_CLIENT_PROTOCOLS


async def dial(
    rest: Upgrader,
    path: str,
    options: ExecOptions,
    *,
    transport: str = "auto",
) -> Connection:
    """Upgrade ``path`` with ``options`` as its query (the API server's spelling, from
    :mod:`~hatchway.protocol.exec_options`) and return the started client connection.

    ``transport``: ``auto`` (WebSocket, then SPDY on a refused upgrade), ``websocket``
    or ``spdy``. A refusal whose body is a ``metav1.Status`` raises it as
    :class:`~hatchway.errors.ApiError`; any other refusal, or a 101 that is not a valid
    answer, raises :class:`~hatchway.protocol.handshake.UpgradeFailedError`
    (``unable to upgrade connection: ...``). Dial errors (refused connection, TLS) are
    raised as they are and never fall back (protocol.md 5.8).
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}")
    query = exec_options.query_pairs(options, exec_options.APISERVER)
    if transport == "spdy":
        return await _dial_spdy(rest, path, query)
    try:
        return await _dial_websocket(rest, path, query, websocket_offer(options))
    except (ApiError, handshake.UpgradeFailedError):
        if transport == "websocket":
            raise
    return await _dial_spdy(rest, path, query)


def _refused(exc: handshake.UpgradeFailedError) -> ApiError | handshake.UpgradeFailedError:
    """The error a refused upgrade raises: the server's Status when its body held one
    (which body does is :mod:`~hatchway.protocol.handshake`'s one rule)."""
    if exc.api_status is None:
        return exc
    return ApiError({**exc.api_status, "code": exc.api_status.get("code") or exc.status})


def _check(
    response: ClientResponse, stream: ByteStream | None, check: Callable[..., str], *args: object
) -> str:
    """``check``'s verdict on the answer: the negotiated protocol, or the refusal raised
    (the stream of an invalid 101 aborted first)."""
    try:
        return check(response.status, response.headers, *args, response.body, response.reason)
    except handshake.UpgradeFailedError as exc:
        if stream is not None:
            stream.abort()
        raise _refused(exc) from None


async def _dial_websocket(
    rest: Upgrader, path: str, query: Sequence[tuple[str, str]], offer: Sequence[str]
) -> Connection:
    key = handshake.new_websocket_key()
    headers = handshake.websocket_request_headers(key, offer)
    response, stream = await rest.upgrade("GET", path, query, {}, extra_headers=headers)
    protocol = _check(response, stream, handshake.check_websocket_response, key, offer)
    assert stream is not None  # a 101 that checks out came with its stream
    from hatchway.transport.websocket import WebSocketConnection

    stream.drain_idle_timeout = CLOSE_IDLE_TIMEOUT
    conn = WebSocketConnection(stream, client=True, protocol=protocol, ping_interval=PING_INTERVAL)
    conn.start()
    return conn


async def _dial_spdy(rest: Upgrader, path: str, query: Sequence[tuple[str, str]]) -> Connection:
    headers = handshake.spdy_request_headers(channel.SPDY_CLIENT_PROTOCOLS)
    response, stream = await rest.upgrade("POST", path, query, {}, extra_headers=headers)
    protocol = _check(response, stream, handshake.check_spdy_response)
    assert stream is not None
    from hatchway.transport.spdy import SpdyConnection

    stream.drain_idle_timeout = CLOSE_IDLE_TIMEOUT
    conn = SpdyConnection(stream, client=True, protocol=protocol, ping_interval=PING_INTERVAL)
    conn.start()
    return conn


async def dial_port_forward(rest: Upgrader, path: str) -> Connection:
    """Upgrade ``path`` (``.../pods/NAME/portforward``) over SPDY/3.1 with
    ``portforward.k8s.io`` as kubectl 1.27-1.30 does (protocol.md 6.3); the started
    client connection, on which each forwarded connection opens its stream pair. A
    refusal raises as :func:`dial`'s do; a 101 for another protocol is refused too."""
    headers = handshake.spdy_request_headers(channel.PORT_FORWARD_SPDY_PROTOCOLS)
    response, stream = await rest.upgrade("POST", path, (), {}, extra_headers=headers)
    protocol = _check(response, stream, handshake.check_spdy_response)
    assert stream is not None
    if protocol != channel.PORT_FORWARD:
        stream.abort()
        raise handshake.UpgradeFailedError(
            f"unable to upgrade connection: the server chose {protocol!r}, "
            f"not {channel.PORT_FORWARD!r}",
            status=response.status,
        )
    from hatchway.transport.spdy import SpdyConnection

    stream.drain_idle_timeout = CLOSE_IDLE_TIMEOUT
    conn = SpdyConnection(stream, client=True, protocol=protocol, ping_interval=PING_INTERVAL)
    conn.start()
    return conn


# -- server side ------------------------------------------------------------------------

#: Serves one accepted connection; :func:`accept` closes the connection after it.
Serve = Callable[[Connection], Awaitable[None]]


def accept(request: Request, serve: Serve) -> Response:
    """The answer to an exec/attach upgrade request, as the kubelet gives it.

    The 101 (headers from the handshake builders) whose upgrade callback makes the
    negotiated driver's server-side connection over the stream, awaits ``serve(conn)``
    and closes it; or the refusal: 400 without an upgrade or with an unknown one, the
    WebSocket refusals of x/net (405, 400, the bare 403 of no common subprotocol), the
    SPDY ones of the kubelet (400 no version, 403 no common version).
    """
    offered = request.header_values("x-stream-protocol-version")
    return _accept(
        request,
        serve,
        channel.WEBSOCKET_SERVER_PROTOCOLS,
        channel.spdy_server_supported(offered),
    )


def accept_port_forward(
    request: Request,
    serve: Serve,
    *,
    num_channels: int,
    spdy_limits: SpdyLimits,
    spdy_stream_buffer: int = PORT_FORWARD_STREAM_BUFFER,
) -> Response:
    """The answer to a port-forward upgrade request, as the kubelet gives it
    (protocol.md 6.3): SPDY with ``portforward.k8s.io`` alone (``spdy_limits`` bounds the
    streams the client may hold open, ``spdy_stream_buffer`` what each may have buffered:
    a pod that reads nothing holds at most streams x buffer), or the WebSocket channel
    form with the kubelet's
    subprotocols and ``num_channels`` channels (two per port). ``serve`` tells the two
    apart by ``conn.protocol`` (:data:`~hatchway.protocol.channel.PORT_FORWARD` is SPDY).
    Refusals as :func:`accept`'s."""
    return _accept(
        request,
        serve,
        channel.PORT_FORWARD_WEBSOCKET_SERVER_PROTOCOLS,
        channel.PORT_FORWARD_SPDY_PROTOCOLS,
        num_channels=num_channels,
        spdy_limits=spdy_limits,
        spdy_stream_buffer=spdy_stream_buffer,
    )


def _accept(
    request: Request,
    serve: Serve,
    websocket_supported: Sequence[str],
    spdy_supported: Sequence[str],
    *,
    num_channels: int = channel.NUM_CHANNELS,
    spdy_limits: SpdyLimits | None = None,
    spdy_stream_buffer: int | None = None,
) -> Response:
    # Server side only: ``hatchway exec`` never pays for it.
    from hatchway.transport.httpmessage import Response, plain_response

    if not handshake.is_upgrade_request(request.headers):
        return plain_response(400, "Upgrade request required")
    upgrade = (request.header("upgrade") or "").lower()
    try:
        if "websocket" in upgrade:
            headers, run = _accept_websocket(request, serve, websocket_supported, num_channels)
        elif "spdy/3.1" in upgrade:
            headers, run = _accept_spdy(
                request, serve, spdy_supported, spdy_limits, spdy_stream_buffer
            )
        else:
            return plain_response(400, f"unable to upgrade: unsupported upgrade {upgrade!r}")
    except (handshake.HandshakeRefusedError, channel.NegotiationError) as exc:
        return Response(exc.status, list(exc.headers), exc.body)
    return Response(101, headers, upgrade=run)


Accepted = tuple[list[tuple[str, str]], Callable[[ByteStream], Awaitable[None]]]


def _accept_websocket(
    request: Request, serve: Serve, supported: Sequence[str], num_channels: int
) -> Accepted:
    """The 101's headers and upgrade callback; raises the x/net refusal."""
    key = handshake.check_websocket_request(request.method, request.headers)
    protocol = handshake.negotiate_websocket_request(request.headers, supported)

    async def run(stream: ByteStream) -> None:
        from hatchway.transport.websocket import WebSocketConnection

        conn = WebSocketConnection(
            stream, client=False, protocol=protocol, num_channels=num_channels
        )
        async with conn:
            await serve(conn)

    return handshake.websocket_response_headers(key, protocol), run


def _accept_spdy(
    request: Request,
    serve: Serve,
    supported: Sequence[str],
    limits: SpdyLimits | None,
    stream_buffer: int | None,
) -> Accepted:
    """The 101's headers and upgrade callback; raises the kubelet's refusal."""
    protocol = handshake.check_spdy_request(request.headers, supported)

    async def run(stream: ByteStream) -> None:
        from hatchway.protocol.spdy import SpdyLimits
        from hatchway.transport.spdy import STREAM_BUFFER, SpdyConnection

        conn = SpdyConnection(
            stream,
            client=False,
            protocol=protocol,
            limits=limits or SpdyLimits(),
            stream_buffer=stream_buffer or STREAM_BUFFER,
        )
        async with conn:
            await serve(conn)

    return handshake.spdy_response_headers(protocol), run

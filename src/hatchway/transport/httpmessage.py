"""What the HTTP server hands its application and takes back: :class:`Request`,
:class:`Response`, the bounds of :class:`HttpLimits`, and the signatures of an
application and of its ``check_head`` (see :mod:`.http`, which re-exports them)."""

from __future__ import annotations

import http
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qs, unquote

import h11

from hatchway.transport.bytestream import DRAIN_IDLE_TIMEOUT, ByteStream
from hatchway.transport.httpclient import HeadersMixin, decode_headers
from hatchway.transport.keepalive import DEFAULT_MAX_IDLE

Upgrade = Callable[[ByteStream], Awaitable[None]]


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on what a client may send, and how slowly."""

    max_head: int = 64 * 1024
    max_headers: int = 128
    max_body: int = 3 * 1024 * 1024
    #: From the first byte of a request to the end of its head (slowloris).
    head_timeout: float = 30.0
    #: For the body of a request, once its head is in.
    body_timeout: float = 60.0
    #: Waiting for the next request on a kept-alive connection.
    idle_timeout: float = 120.0
    #: Kept-alive connections waiting for a request at once; beyond, the longest idle
    #: is closed (:mod:`.keepalive`: each costs ~45 KiB, and kubectl leaves one per exec).
    max_idle_connections: int = DEFAULT_MAX_IDLE
    #: After refusing a request, how long to swallow what the client still sends so the
    #: refusal is not lost to a TCP reset.
    linger: float = 2.0
    #: ... and lingering ends sooner once the client has been quiet this long.
    linger_quiet: float = 0.25
    #: An upgraded connection (a streaming session): how long a write may wait for a
    #: peer that reads nothing before the connection is cut.
    stream_idle_timeout: float = DRAIN_IDLE_TIMEOUT
    #: Open connections per server (503 beyond) and per source address (429 beyond).
    max_connections: int = 4096
    max_connections_per_source: int = 256

    def scaled(self, factor: float) -> HttpLimits:
        """These limits with every timeout multiplied by ``factor`` (a slow or loaded
        machine; ``--timeout-scale``); the size and count bounds stay."""
        return replace(self, **{name: getattr(self, name) * factor for name in TIMEOUTS})


#: The fields of :class:`HttpLimits` that are durations, in seconds.
TIMEOUTS = tuple(f.name for f in fields(HttpLimits) if f.type in ("float", float))


@dataclass
class Request(HeadersMixin):
    """One HTTP request. Header names are lower-case; ``query`` keeps blank values and
    the order of repeated keys."""

    method: str
    target: str
    path: str
    raw_path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]
    body: bytes
    stream: ByteStream
    peercert: dict[str, Any] | None = None
    peer: Any = None
    http_version: str = "1.1"
    #: What the server's head check learned, for the application (the API server keeps
    #: the authenticated user here, so a request is authenticated once).
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def is_upgrade(self) -> bool:
        """``Connection`` names ``upgrade`` (case-insensitive), as Kubernetes decides."""
        return any("upgrade" in v.lower() for v in self.header_values("connection"))


@dataclass
class Response:
    """What the application answers. ``body_iter`` streams a chunked body; ``upgrade``
    (with status 101) takes the connection over. ``abandon`` is called, once, when
    ``upgrade`` was given but will never be called (the client left before its 101
    could be written, or the 101 was invalid): whatever the application set up for the
    upgrade -- a session slot, the node's connection -- is let go there."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    body_iter: AsyncIterator[bytes] | None = None
    upgrade: Upgrade | None = None
    reason: str | None = None
    abandon: Callable[[], None] | None = None


App = Callable[[Request], Awaitable[Response]]
#: Sees a request's head before its body is read (``body`` is ``b""``); a Response
#: answers the request without reading the body, None lets it through.
CheckHead = Callable[[Request], Awaitable[Response | None]]


def reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def plain_response(status: int, text: str) -> Response:
    return Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")],
        (text + "\n").encode(),
    )


def build_request(event: h11.Request, body: bytes, stream: ByteStream) -> Request:
    target = event.target.decode("latin-1")
    raw_path, _, query = target.partition("?")
    cert = stream.peercert
    return Request(
        method=event.method.decode("ascii"),
        target=target,
        path=unquote(raw_path),
        raw_path=raw_path,
        query=parse_qs(query, keep_blank_values=True),
        headers=decode_headers(event.headers),
        body=body,
        stream=stream,
        peercert=cert or None,
        peer=stream.peername,
        http_version=event.http_version.decode("ascii"),
    )


def has_body(event: h11.Request) -> bool:
    """Whether the request announces a body (chunked, or a non-zero Content-Length)."""
    for name, value in event.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False

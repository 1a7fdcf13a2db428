"""HTTP upgrade handshake rules for the SPDY and WebSocket transports, sans-I/O.

Server side: decide whether a request may be upgraded and build the 101 exactly as the
Go servers write it (protocol.md 3.1, 5.2). Client side: decide whether a response is an
accepted upgrade (protocol.md 3.1 "client acceptance", 5.2 "client-go acceptance"); anything
else is an :class:`UpgradeFailedError`, which is what makes kubectl fall back to SPDY.

Headers are accepted as a mapping or as a sequence of ``(name, value)`` pairs, str or
bytes (h11 hands out lower-case bytes); names compare case-insensitively.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping, Sequence

from hatchway.errors import HandshakeError
from hatchway.protocol import channel, peer_json

try:
    # hashlib is heavy to import (~1 ms of an exec: it tries every OpenSSL digest and
    # loads blake2); the lean module first, as the standard library's random does.
    from _sha1 import sha1
except ImportError:
    from hashlib import sha1

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SPDY_UPGRADE = "SPDY/3.1"
HeadersLike = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

_REASONS = {
    101: "Switching Protocols",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
}


class HandshakeRefusedError(HandshakeError):
    """The server refuses an upgrade request. ``status``/``headers``/``body`` are the
    answer; :attr:`raw` is the exact byte form where Go writes one by hand (x/net)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        raw: bytes | None = None,
    ) -> None:
        super().__init__(message, status=status, headers=headers, body=body)
        self.raw = raw


class UpgradeFailedError(HandshakeError):
    """The server did not accept our upgrade (client side). ``api_status`` is the
    ``metav1.Status`` the body held, if it held one; kubectl then prints that instead."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        api_status: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status=status, headers=headers, body=body)
        self.api_status = api_status


# -- header helpers ---------------------------------------------------------------------


def _text(v: str | bytes) -> str:
    return v.decode("latin-1") if isinstance(v, bytes) else v


def _pairs(headers: HeadersLike) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(_text(k).lower(), _text(v)) for k, v in items]


def header_values(headers: HeadersLike, name: str) -> list[str]:
    name = name.lower()
    return [v for k, v in _pairs(headers) if k == name]


def _first(headers: HeadersLike, name: str) -> str:
    values = header_values(headers, name)
    return values[0] if values else ""


def _any_contains(headers: HeadersLike, name: str, needle: str) -> bool:
    return any(needle in v.lower() for v in header_values(headers, name))


def is_upgrade_request(headers: HeadersLike) -> bool:
    """Go's ``httpstream.IsUpgradeRequest``: some ``Connection`` value contains
    ``upgrade`` (case-insensitive substring, which covers the token)."""
    return _any_contains(headers, "connection", "upgrade")


def _raw_response(status: int, headers: Sequence[tuple[str, str]], body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


# -- WebSocket --------------------------------------------------------------------------


def websocket_accept(key: str) -> str:
    digest = sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def new_websocket_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")  # secrets.token_bytes(16)


def _refuse_ws(
    status: int, text: str, headers: list[tuple[str, str]] | None = None
) -> HandshakeRefusedError:
    # x/net writes status line, optional headers, blank line, the error text; no length.
    body = text.encode()
    headers = headers or []
    raw = _raw_response(status, headers, body)
    return HandshakeRefusedError(text, status=status, headers=headers, body=body, raw=raw)


def check_websocket_request(method: str, headers: HeadersLike) -> str:
    """Validate an upgrade request as x/net/websocket does; returns the key."""
    if method.upper() != "GET":
        raise _refuse_ws(405, "bad method")
    if (
        _first(headers, "upgrade").lower() != "websocket"
        or "upgrade" not in _first(headers, "connection").lower()
    ):
        raise _refuse_ws(400, "not websocket protocol")
    key = _first(headers, "sec-websocket-key")
    if not key:
        raise _refuse_ws(400, "mismatch challenge/response")
    if _first(headers, "sec-websocket-version") not in ("13", "8"):
        raise _refuse_ws(400, "missing or bad WebSocket Version", [("Sec-WebSocket-Version", "13")])
    return key


def negotiate_websocket_request(headers: HeadersLike, server_supported: Sequence[str]) -> str:
    """Subprotocol choice; no match is x/net's bare ``403 Forbidden`` (protocol.md 5.2)."""
    values = header_values(headers, "sec-websocket-protocol")
    try:
        return channel.negotiate_websocket(",".join(values) if values else None, server_supported)
    except channel.NegotiationError:
        raise HandshakeRefusedError(
            "no acceptable WebSocket subprotocol", status=403, raw=_raw_response(403, [])
        ) from None


def websocket_request_headers(key: str, protocols: Sequence[str]) -> list[tuple[str, str]]:
    """Upgrade headers of kubectl's request (protocol.md 5.1), sorted by name as Go sends them.
    Host, User-Agent and Authorization are the HTTP client's."""
    headers = [("Connection", "Upgrade"), ("Sec-WebSocket-Key", key)]
    if protocols:
        headers.append(("Sec-WebSocket-Protocol", channel.websocket_protocols_header(protocols)))
    headers += [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")]
    return headers


def websocket_response_headers(key: str, protocol: str) -> list[tuple[str, str]]:
    """The 101 headers in x/net's fixed order; no protocol line when it is ``""``."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", websocket_accept(key)),
    ]
    if protocol:
        headers.append(("Sec-WebSocket-Protocol", protocol))
    return headers


def websocket_response_bytes(key: str, protocol: str) -> bytes:
    """The whole 101, byte-exact as x/net writes it (protocol.md 5.2)."""
    return _raw_response(101, websocket_response_headers(key, protocol))


def _go_quoted_list(items: Sequence[str]) -> str:
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


def check_websocket_response(
    status: int,
    headers: HeadersLike,
    key: str,
    offered: Sequence[str],
    body: bytes = b"",
    reason: str = "",
) -> str:
    """Accept a WebSocket 101 as gorilla + client-go do; returns the subprotocol.
    Anything else is an :class:`UpgradeFailedError` (see :func:`_upgrade_failed` for a
    refusal's ``body`` and ``reason``)."""
    if status != 101:
        raise _upgrade_failed(status, headers, body, reason)
    upgrade_ok = any(
        t.strip().lower() == "websocket"
        for v in header_values(headers, "upgrade")
        for t in v.split(",")
    )
    conn_ok = any(
        t.strip().lower() == "upgrade"
        for v in header_values(headers, "connection")
        for t in v.split(",")
    )
    if not (upgrade_ok and conn_ok) or _first(headers, "sec-websocket-accept") != websocket_accept(
        key
    ):
        raise UpgradeFailedError("websocket: bad handshake", status=status, headers=_pairs(headers))
    protocol = _first(headers, "sec-websocket-protocol").strip()
    if protocol not in offered:
        raise UpgradeFailedError(
            f"invalid protocol, expected one of {_go_quoted_list(offered)}, "
            f"got {json.dumps(protocol)}",
            status=status,
            headers=_pairs(headers),
        )
    return protocol


# -- SPDY -------------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def _go_header_repr(headers: HeadersLike) -> str:
    grouped: dict[str, list[str]] = {}
    for k, v in _pairs(headers):
        grouped.setdefault(_canonical(k), []).append(v)
    parts = [
        f'"{k}":[]string{{{", ".join(json.dumps(v) for v in vs)}}}'
        for k, vs in sorted(grouped.items())
    ]
    return "http.Header{" + ", ".join(parts) + "}"


def check_spdy_request(headers: HeadersLike, server_supported: Sequence[str] | None = None) -> str:
    """Server side, in the kubelet's order: negotiate ``X-Stream-Protocol-Version``
    (when ``server_supported`` is given; 400/403 :class:`channel.NegotiationError`), then
    require ``Connection: upgrade`` and ``Upgrade: spdy/3.1`` (400). Returns the protocol
    (``""`` when not negotiating)."""
    protocol = ""
    if server_supported is not None:
        protocol = channel.negotiate_spdy(
            header_values(headers, "x-stream-protocol-version"), server_supported
        )
    if not (is_upgrade_request(headers) and _any_contains(headers, "upgrade", "spdy/3.1")):
        msg = f"unable to upgrade: missing upgrade headers in request: {_go_header_repr(headers)}"
        raise HandshakeRefusedError(
            msg,
            status=400,
            headers=[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("X-Content-Type-Options", "nosniff"),
            ],
            body=msg.encode() + b"\n",
        )
    return protocol


def spdy_request_headers(protocols: Sequence[str]) -> list[tuple[str, str]]:
    """Upgrade headers of kubectl's SPDY request (protocol.md 3.1): one version line each."""
    headers = [("Connection", "Upgrade"), ("Upgrade", SPDY_UPGRADE)]
    return headers + [("X-Stream-Protocol-Version", p) for p in protocols]


def spdy_response_headers(protocol: str, date: str | None = None) -> list[tuple[str, str]]:
    headers = [("Connection", "Upgrade"), ("Upgrade", SPDY_UPGRADE)]
    if protocol:
        headers.append(("X-Stream-Protocol-Version", protocol))
    if date:
        headers.append(("Date", date))
    return headers


def spdy_response_bytes(protocol: str, date: str | None = None) -> bytes:
    return _raw_response(101, spdy_response_headers(protocol, date))


def check_spdy_response(
    status: int, headers: HeadersLike, body: bytes = b"", reason: str = ""
) -> str:
    """Accept a SPDY 101 as client-go does; returns the negotiated protocol, which is
    ``channel.k8s.io`` when the header is missing (protocol.md 3.1: kubectl silently degrades).
    Anything else is an :class:`UpgradeFailedError`."""
    if status != 101 or not (
        is_upgrade_request(headers) and _any_contains(headers, "upgrade", "spdy/3.1")
    ):
        raise _upgrade_failed(status, headers, body, reason)
    return _first(headers, "x-stream-protocol-version").strip() or channel.V1


def _upgrade_failed(
    status: int, headers: HeadersLike, body: bytes, reason: str = ""
) -> UpgradeFailedError:
    """The one rule for a refused upgrade (protocol.md 3.1, 5.2): a body that is a
    ``metav1.Status`` is the error (``api_status``; the client raises it as the server's
    :class:`~hatchway.errors.ApiError`), anything else is ``unable to upgrade
    connection: <trimmed body>`` -- the status line's ``reason`` when there is no body
    (a pre-1.30 server's bare 403 reads ``...: Forbidden``)."""
    api_status = _as_status(body)
    if api_status is not None:
        message = str(api_status.get("message") or api_status.get("reason") or f"HTTP {status}")
    else:
        text = body.decode("utf-8", "replace").strip() or reason
        message = "unable to upgrade connection: " + text
    return UpgradeFailedError(
        message, status=status, headers=_pairs(headers), body=body, api_status=api_status
    )


def _as_status(body: bytes) -> dict[str, Any] | None:
    try:
        obj = peer_json.loads(body)
    except ValueError:  # nested brackets too (64 KiB of "["): no Status
        return None
    if isinstance(obj, dict) and (
        obj.get("kind") == "Status" or ("status" in obj and "kind" not in obj)
    ):
        return obj
    return None

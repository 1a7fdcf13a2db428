"""The Kubernetes remote-command channel protocols (``*.channel.k8s.io``), sans-I/O.

Versions are a capability table (protocol.md 4.2): negotiation picks a name, and everything
else asks :func:`capabilities` what that name can do. This module also holds the
WebSocket channel message codec (protocol.md 5.3-5.5), the error-channel Status JSON
(protocol.md 4.3) with the client's reading of it (protocol.md 4.2), and the resize JSON
(protocol.md 4.4).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Sequence

from hatchway.errors import HandshakeError, LimitExceededError, ProtocolError
from hatchway.protocol import peer_json
from hatchway.types import named_tuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# -- channels (protocol.md 4.1) ----------------------------------------------------------------

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
#: v5 WebSocket control message ``FF <channel>``: the sender writes no more there.
CLOSE_SIGNAL = 255
#: Channels an exec/attach WebSocket connection has (Go's ``len(conn.channels)``).
NUM_CHANNELS = 5

CHANNEL_BY_NAME: dict[str, int] = {
    "stdin": STDIN,
    "stdout": STDOUT,
    "stderr": STDERR,
    "error": ERROR,
    "resize": RESIZE,
}
NAME_BY_CHANNEL: dict[int, str] = {v: k for k, v in CHANNEL_BY_NAME.items()}

# -- versions (protocol.md 4.2) ----------------------------------------------------------------

V1 = "channel.k8s.io"
V2 = "v2.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
BASE64_V1 = "base64.channel.k8s.io"
BASE64_V4 = "v4.base64.channel.k8s.io"


@named_tuple
class Capabilities:
    """What one channel protocol version can do (a named tuple, not a dataclass: the
    exec client starts without importing ``dataclasses``, ``inspect`` or ``typing``)."""

    name: str
    status_json: bool  # error channel carries a metav1.Status, always written (v4+)
    resize: bool  # resize stream / channel 4 exists (v3+)
    close_signal: bool  # WebSocket ``FF <ch>`` half-close (v5)
    base64: bool  # WebSocket text messages, '0'+channel then base64 (protocol.md 5.5)
    client_waits_for_error_eof: bool  # v2+: the client reads the error stream to EOF


VERSIONS: dict[str, Capabilities] = {
    c.name: c
    for c in (
        Capabilities(V1, False, False, False, False, False),
        Capabilities(V2, False, False, False, False, True),
        Capabilities(V3, False, True, False, False, True),
        Capabilities(V4, True, True, False, False, True),
        Capabilities(V5, True, True, True, False, True),
        Capabilities(BASE64_V1, False, False, False, True, False),
        Capabilities(BASE64_V4, True, True, False, True, True),
    )
}

# The offer and supported tables, one per transport and side: the exec upgrade
# (``session/upgrade.py``) and the byte-exact handshake tests use these and no copies.

#: What a node agent supports over SPDY, in the kubelet's order (its 403 lists them so).
SPDY_SERVER_PROTOCOLS = (V5, V4, V3, V2, V1)
#: What kubectl offers over SPDY (one header line each, this order).
SPDY_CLIENT_PROTOCOLS = (V5, V4, V3, V2, V1)
#: The kubelet's WebSocket set ("" is the unversioned protocol) plus v5, protocol.md 5.2.
WEBSOCKET_SERVER_PROTOCOLS = (V5, "", V1, BASE64_V1, V4, BASE64_V4)
#: What our client offers over WebSocket: v5 first, and v4 for a server without v5 --
#: but only when there is no stdin (:data:`WEBSOCKET_CLIENT_PROTOCOLS_STDIN`).
WEBSOCKET_CLIENT_PROTOCOLS = (V5, V4)
#: With stdin kubectl offers v5 alone (protocol.md 5.1; the reason is at the upgrade's use).
WEBSOCKET_CLIENT_PROTOCOLS_STDIN = (V5,)

# Port-forward (protocol.md 6.3): one SPDY protocol, the kubelet's WebSocket channel set
# (binary v4 and "" alike; base64 v4 as text), and kubectl 1.31+'s SPDY-in-WebSocket tunnel.

#: The only SPDY protocol of port-forward (``X-Stream-Protocol-Version``).
PORT_FORWARD = "portforward.k8s.io"
PORT_FORWARD_SPDY_PROTOCOLS = (PORT_FORWARD,)
#: What a node agent accepts for the channel form (``?ports=``): the kubelet's set.
PORT_FORWARD_WEBSOCKET_SERVER_PROTOCOLS = ("", V4, BASE64_V4)
#: What our client offers for the channel form.
PORT_FORWARD_WEBSOCKET_CLIENT_PROTOCOLS = (V4,)
#: kubectl 1.31+'s WebSocket subprotocol: SPDY frames carried in binary messages.
TUNNEL_PREFIX = "SPDY/3.1+"
PORT_FORWARD_TUNNEL = TUNNEL_PREFIX + PORT_FORWARD
#: Data and error channel of the ``index``-th port of a channel-form port-forward.
PORT_FORWARD_DATA, PORT_FORWARD_ERROR = 0, 1


def port_forward_channels(index: int) -> tuple[int, int]:
    """(data, error) channel numbers of the ``index``-th forwarded port."""
    return 2 * index + PORT_FORWARD_DATA, 2 * index + PORT_FORWARD_ERROR


VersionLike = str | Capabilities


def capabilities(version: VersionLike) -> Capabilities:
    """The capability row of ``version``; ``""`` (no WebSocket subprotocol) is v1."""
    if isinstance(version, Capabilities):
        return version
    try:
        return VERSIONS[version or V1]
    except KeyError:
        raise ProtocolError(f"unknown channel protocol {version!r}") from None


# -- negotiation (protocol.md 3.1, 5.2) --------------------------------------------------------


class NegotiationError(HandshakeError):
    """Protocol negotiation failed; ``status``, ``headers`` and ``body`` are the HTTP
    answer Go's httpstream gives (400 nothing offered, 403 no overlap)."""


def _go_list(items: Iterable[str]) -> str:
    return "[" + " ".join(items) + "]"


def _split(values: Iterable[str]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def negotiate_spdy(client_values: list[str], server_supported: Sequence[str]) -> str:
    """The first client-offered protocol the server supports (client preference wins).

    ``client_values`` are the raw ``X-Stream-Protocol-Version`` header values; each is
    split on commas and trimmed.
    """
    offered = _split(client_values)
    text_headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if not offered:
        msg = "unable to upgrade: X-Stream-Protocol-Version is required"
        raise NegotiationError(msg, status=400, headers=text_headers, body=msg.encode() + b"\n")
    for proto in offered:
        if proto in server_supported:
            return proto
    msg = (
        "unable to upgrade: unable to negotiate protocol: "
        f"client supports {_go_list(offered)}, server accepts {_go_list(server_supported)}"
    )
    accepted = [("X-Accepted-Stream-Protocol-Versions", p) for p in server_supported]
    raise NegotiationError(
        msg, status=403, headers=accepted + text_headers, body=msg.encode() + b"\n"
    )


def spdy_server_supported(client_values: list[str]) -> tuple[str, ...]:
    """What a node agent accepts from this SPDY offer: the kubelet's choice for kubectl is
    v4 (protocol.md 3.1), so we stay with that whenever v4 is offered, and take v5 (which
    behaves as v4 over SPDY) only from a client that offers no v4."""
    if V4 in _split(client_values):
        return tuple(p for p in SPDY_SERVER_PROTOCOLS if p != V5)
    return SPDY_SERVER_PROTOCOLS


def parse_websocket_protocols(header_value: str | None) -> list[str]:
    """``Sec-WebSocket-Protocol`` split on commas and trimmed; absent/blank means ``[""]``."""
    offered = _split([header_value or ""])
    return offered or [""]


def negotiate_websocket(header_value: str | None, server_supported: Sequence[str]) -> str:
    """First client entry the server allows (x/net); no match is a bare 403 (protocol.md 5.2)."""
    for proto in parse_websocket_protocols(header_value):
        if proto in server_supported:
            return proto
    raise NegotiationError(
        "unable to negotiate WebSocket subprotocol", status=403, headers=[], body=b""
    )


def websocket_protocols_header(protocols: Sequence[str]) -> str:
    """The client's ``Sec-WebSocket-Protocol`` value (gorilla joins with ``", "``)."""
    return ", ".join(protocols)


# -- WebSocket message codec (protocol.md 5.3-5.5) ---------------------------------------------


def encode_message(version: VersionLike, channel: int, data: bytes) -> bytes | str:
    """One WebSocket message: binary ``channel byte + data``, or for base64 protocols a
    text message ``'0'+channel`` followed by standard base64 of ``data``."""
    caps = capabilities(version)
    if caps.base64:
        if not 0 <= channel <= 9:
            raise ValueError(f"channel {channel} cannot be written in base64 framing")
        return chr(48 + channel) + base64.b64encode(data).decode("ascii")
    if not 0 <= channel <= 255:
        raise ValueError(f"channel {channel} out of range")
    return bytes((channel,)) + bytes(data)


def encode_close_signal(channel: int) -> bytes:
    """The v5 close signal ``FF <channel>`` (protocol.md 5.4)."""
    return bytes((CLOSE_SIGNAL, channel))


def decode_message(
    version: VersionLike, payload: bytes | str, *, num_channels: int = NUM_CHANNELS
) -> tuple[int, bytes]:
    """``(channel, data)`` of one received message, text or binary (Go servers accept
    both). A v5 close signal comes back as ``(CLOSE_SIGNAL, bytes([target]))``.

    Unknown channels are returned as they are; the caller discards them.
    """
    caps = capabilities(version)
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    if not raw:
        raise ProtocolError("empty WebSocket message: no channel byte", code=1002)
    if caps.base64:
        channel = raw[0] - 48
        if not 0 <= channel <= 9:
            raise ProtocolError(f"invalid base64 channel prefix {raw[:1]!r}", code=1007)
        try:
            return channel, base64.b64decode(raw[1:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(
                f"invalid base64 data on channel {channel}: {exc}", code=1007
            ) from None
    channel = raw[0]
    if channel == CLOSE_SIGNAL and caps.close_signal:
        if len(raw) != 2:
            raise ProtocolError(f"close signal of {len(raw)} bytes, want 2", code=1002)
        if raw[1] >= num_channels:
            raise ProtocolError(f"close signal for unknown channel {raw[1]}", code=1002)
        return CLOSE_SIGNAL, bytes(raw[1:2])
    return channel, bytes(raw[1:])


# -- Status JSON (protocol.md 4.3) -------------------------------------------------------------


def _go_json(obj: Any) -> bytes:
    """Compact JSON the way Go's encoding/json writes it (HTML-safe escapes)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8")


def status_success() -> bytes:
    return _go_json({"metadata": {}, "status": "Success"})


def status_exit_code(code: int, message: str) -> bytes:
    """NonZeroExitCode with the ExitCode cause first (the Python client reads index 0)."""
    return _go_json(
        {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    )


def status_internal_error(err: str) -> bytes:
    return _go_json(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"Internal error occurred: {err}",
            "reason": "InternalError",
            "details": {"causes": [{"message": err}]},
            "code": 500,
        }
    )


@named_tuple
class ExecOutcome:
    """How an exec ended, as the client reads the error channel.

    ``exit_code`` is 0 on success, N for a remote non-zero exit, None when the session
    failed without an exit code; ``message`` is then the error text kubectl would print
    (after ``error: ``). ``status`` is the decoded Status (v4+), if any.
    """

    exit_code: int | None
    message: str = ""
    reason: str = ""
    status: dict[str, Any] | None = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0


class StatusProtocolError(ProtocolError):
    """The error channel held something a v4/v5 client cannot read (protocol.md 4.2)."""


def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _field(obj: dict[str, Any], name: str) -> Any:
    """Go's encoding/json key matching: exact first, else case-insensitive."""
    if name in obj:
        return obj[name]
    low = name.lower()
    for key, value in obj.items():
        if key.lower() == low:
            return value
    return None


def _json_error_text(exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(exc.doc.rstrip()):
        return "unexpected end of JSON input"
    ch = exc.doc[exc.pos]
    return f"invalid character {ch!r} looking for beginning of value"


def _decode_status(raw: bytes) -> dict[str, Any]:
    text = raw.decode("utf-8", errors="replace")
    try:
        obj = peer_json.loads(text)
    except json.JSONDecodeError as exc:
        raise StatusProtocolError(
            f"error stream protocol error: {_json_error_text(exc)} in {_go_quote(text)}"
        ) from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(obj), "number")
        raise StatusProtocolError(
            f"error stream protocol error: json: cannot unmarshal {kind} into Go value "
            f"of type v1.Status in {_go_quote(text)}"
        )
    return obj


def _exit_code_outcome(status: dict[str, Any]) -> ExecOutcome:
    details = _field(status, "details")
    if not isinstance(details, dict):
        raise StatusProtocolError("error stream protocol error: details must be set")
    for cause in _field(details, "causes") or []:
        if not isinstance(cause, dict) or _field(cause, "reason") != "ExitCode":
            continue
        value = _field(cause, "message")
        value = value if isinstance(value, str) else ""
        if not re.fullmatch(r"[0-9]+", value) or int(value) > 255:
            raise StatusProtocolError(
                f"error stream protocol error: invalid exit code value {_go_quote(value)}"
            )
        code = int(value)
        msg = f"command terminated with exit code {code}"
        return ExecOutcome(code, msg, "NonZeroExitCode", status)
    raise StatusProtocolError("error stream protocol error: no ExitCode cause given")


def parse_status(version: VersionLike, raw: bytes) -> ExecOutcome:
    """Read the whole error channel the way client-go does (protocol.md 4.2).

    Malformed v4/v5 statuses raise :class:`StatusProtocolError` with kubectl's text.
    """
    caps = capabilities(version)
    if not caps.status_json:
        if not raw:
            return ExecOutcome(0)
        text = raw.decode("utf-8", errors="replace")
        prefix = (
            "error executing remote command"
            if caps.client_waits_for_error_eof
            else ("Error executing remote command")
        )
        return ExecOutcome(None, f"{prefix}: {text}")
    if not raw:
        return ExecOutcome(0)
    status = _decode_status(raw)
    state = _field(status, "status")
    if state == "Success":
        return ExecOutcome(0, "", "", status)
    if state == "Failure":
        reason = _field(status, "reason")
        if reason == "NonZeroExitCode":
            return _exit_code_outcome(status)
        message = _field(status, "message")
        return ExecOutcome(
            None, message if isinstance(message, str) else "", str(reason or ""), status
        )
    raise StatusProtocolError("error stream protocol error: unknown error")


# -- resize (protocol.md 4.4) ------------------------------------------------------------------

MAX_RESIZE_OBJECT = 1024


def encode_resize(width: int, height: int) -> bytes:
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        raise ValueError("terminal size out of uint16 range")
    return b'{"Width":%d,"Height":%d}\n' % (width, height)


class ResizeDecoder:
    """Turns the resize stream (concatenated JSON objects, whitespace optional) into
    ``(width, height)`` pairs. Keys match case-insensitively, as Go's decoder does.

    Bounded: one object may not exceed :data:`MAX_RESIZE_OBJECT` bytes.
    """

    def __init__(self, max_object: int = MAX_RESIZE_OBJECT) -> None:
        self._buf = bytearray()
        self._max = max_object
        # Scanner state over self._buf, kept between feeds so each byte is seen once.
        self._pos = 0
        self._depth = 0
        self._in_string = False
        self._escape = False

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        self._buf += data
        sizes: list[tuple[int, int]] = []
        while (end := self._scan()) is not None:
            obj = bytes(self._buf[:end])
            del self._buf[:end]
            self._pos = 0
            sizes.append(self._decode(obj))
        if len(self._buf) > self._max:
            raise LimitExceededError(f"resize object larger than {self._max} bytes")
        return sizes

    def _scan(self) -> int | None:
        """Index just past the next complete object, or None if it is incomplete."""
        buf = self._buf
        if self._depth == 0:
            stripped = len(buf) - len(buf.lstrip())
            del buf[:stripped]
            self._pos = 0
            if not buf:
                return None
            if buf[0] != 0x7B:  # '{'
                raise ProtocolError(f"resize: expected a JSON object, got {bytes(buf[:16])!r}")
        while self._pos < len(buf) and self._pos <= self._max:
            c = buf[self._pos]
            self._pos += 1
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == 0x5C:
                    self._escape = True
                elif c == 0x22:
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c in (0x7B, 0x5B):
                self._depth += 1
            elif c in (0x7D, 0x5D):
                self._depth -= 1
                if self._depth == 0:
                    return self._pos
        return None

    @staticmethod
    def _decode(obj: bytes) -> tuple[int, int]:
        try:
            value = peer_json.loads(obj)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"resize: invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ProtocolError("resize: expected a JSON object")
        size = []
        for key in ("Width", "Height"):
            v = _field(value, key)
            v = 0 if v is None else v
            if type(v) is not int or not 0 <= v <= 0xFFFF:
                raise ProtocolError(f"resize: {key} {v!r} is not a uint16")
            size.append(v)
        return size[0], size[1]

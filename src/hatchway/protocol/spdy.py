"""SPDY/3.1 connection state, sans I/O, as moby/spdystream behaves (protocol.md 3.5-3.7).

Feed received bytes to :meth:`SpdyProtocol.receive_data`, act on the events it returns,
and write out what :meth:`SpdyProtocol.buffers_to_send` hands back. No socket, task or
clock in here.

Choices where spdystream is lax or the draft and spdystream differ:

* DATA for a stream whose SYN_REPLY has not been exchanged yet is discarded silently, as
  spdystream does; DATA for an unknown (e.g. already reset) stream is ignored.
* An incoming SYN_STREAM whose id is not above the last one, or has our parity, gets
  RST_STREAM PROTOCOL_ERROR and is dropped; the connection lives on (spdystream checks only
  monotonicity; parity is our addition -- such an id could collide with our own streams).
  One beyond ``max_streams`` concurrently open peer streams gets RST_STREAM
  REFUSED_STREAM and is dropped likewise.
* Stream-level faults (DATA after the peer's FIN, a second SYN_REPLY) get an RST_STREAM and
  a :class:`StreamReset` event with ``remote=False``; connection-level faults raise
  :class:`~hatchway.errors.ProtocolError`, limits :class:`~hatchway.errors.LimitExceededError`.
* HEADERS frames are decoded and checked (to keep the zlib context in step); their FIN
  half-closes like a DATA FIN; their contents are not reported.
* After :meth:`SpdyProtocol.refuse_streams` (a server session with all its streams) the
  zlib contexts are gone: later header blocks are skipped undecoded, SYN_STREAMs refused.
* No flow-control windows (protocol.md 3.6): SETTINGS and WINDOW_UPDATE are parsed and dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from hatchway.errors import HatchwayError, ProtocolError
from hatchway.protocol import spdy_frame as fr
from hatchway.protocol.spdy_header import (
    FORBIDDEN_REQUEST,
    FORBIDDEN_RESPONSE,
    HeaderCompressor,
    HeaderDecompressor,
    HeaderValue,
    check_forbidden,
    encode_block,
)

CANCEL = fr.RstStatus.CANCEL
REFUSED_STREAM = fr.RstStatus.REFUSED_STREAM


class SpdyUsageError(HatchwayError):
    """The local side asked for something the protocol does not allow (a bug in the caller)."""


@dataclass(frozen=True, slots=True)
class SpdyLimits:
    #: DATA payloads up to the wire maximum: a kubelet may send any chunk up to 16 MiB.
    max_data_length: int = fr.MAX_LENGTH
    max_control_length: int = 1024 * 1024
    #: Decompressed header block bound.
    max_header_block: int = 64 * 1024
    max_headers: int = 64
    #: Concurrently open streams the peer created.
    max_streams: int = 32
    #: DATA payload size we send; larger writes are split.
    max_send_data: int = fr.MAX_LENGTH


# -- events ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamOpened:
    stream_id: int
    headers: dict[str, str]
    fin: bool = False


@dataclass(frozen=True, slots=True)
class StreamReplied:
    stream_id: int
    headers: dict[str, str]
    fin: bool = False


@dataclass(frozen=True, slots=True)
class DataReceived:
    stream_id: int
    data: bytes | memoryview
    fin: bool = False


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int
    status: int
    #: False when we reset the stream because the peer broke a stream-level rule.
    remote: bool = True


@dataclass(frozen=True, slots=True)
class PingAcknowledged:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    last_good_stream_id: int
    status: int


Event = (
    StreamOpened | StreamReplied | DataReceived | StreamReset | PingAcknowledged | GoAwayReceived
)


# -- stream state table (STYLE.md 2) --------------------------------------------------------
class StreamState(enum.Enum):
    SYN_SENT = "syn-sent"  # we opened it, no reply yet
    SYN_SENT_FIN = "syn-sent-fin"  # ... with FIN on the SYN_STREAM
    SYN_RECEIVED = "syn-received"  # the peer opened it, we have not replied
    SYN_RECEIVED_FIN = "syn-received-fin"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed-local"  # we sent FIN
    HALF_CLOSED_REMOTE = "half-closed-remote"  # the peer sent FIN
    CLOSED = "closed"


class StreamInput(enum.Enum):
    SEND_REPLY = "send-reply"
    SEND_REPLY_FIN = "send-reply-fin"
    SEND_DATA = "send-data"
    SEND_FIN = "send-fin"
    SEND_RST = "send-rst"
    RECV_REPLY = "recv-reply"
    RECV_REPLY_FIN = "recv-reply-fin"
    RECV_DATA = "recv-data"
    RECV_FIN = "recv-fin"
    RECV_RST = "recv-rst"


S, I = StreamState, StreamInput  # noqa: E741
#: Marks a received frame that is dropped without a state change (data before the reply).
DISCARD = "discard"

STREAM_TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState | str] = {
    (S.SYN_SENT, I.RECV_REPLY): S.OPEN,
    (S.SYN_SENT, I.RECV_REPLY_FIN): S.HALF_CLOSED_REMOTE,
    (S.SYN_SENT, I.RECV_DATA): DISCARD,
    (S.SYN_SENT, I.RECV_FIN): DISCARD,
    (S.SYN_SENT_FIN, I.RECV_REPLY): S.HALF_CLOSED_LOCAL,
    (S.SYN_SENT_FIN, I.RECV_REPLY_FIN): S.CLOSED,
    (S.SYN_SENT_FIN, I.RECV_DATA): DISCARD,
    (S.SYN_SENT_FIN, I.RECV_FIN): DISCARD,
    (S.SYN_RECEIVED, I.SEND_REPLY): S.OPEN,
    (S.SYN_RECEIVED, I.SEND_REPLY_FIN): S.HALF_CLOSED_LOCAL,
    (S.SYN_RECEIVED, I.RECV_DATA): DISCARD,
    (S.SYN_RECEIVED, I.RECV_FIN): DISCARD,
    (S.SYN_RECEIVED_FIN, I.SEND_REPLY): S.HALF_CLOSED_REMOTE,
    (S.SYN_RECEIVED_FIN, I.SEND_REPLY_FIN): S.CLOSED,
    (S.SYN_RECEIVED_FIN, I.RECV_DATA): DISCARD,
    (S.SYN_RECEIVED_FIN, I.RECV_FIN): DISCARD,
    (S.OPEN, I.SEND_DATA): S.OPEN,
    (S.OPEN, I.SEND_FIN): S.HALF_CLOSED_LOCAL,
    (S.OPEN, I.RECV_DATA): S.OPEN,
    (S.OPEN, I.RECV_FIN): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_LOCAL, I.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_FIN): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, I.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.SEND_FIN): S.CLOSED,
}
# A reset ends a stream from any live state, in either direction.
for _state in StreamState:
    if _state is not S.CLOSED:
        STREAM_TRANSITIONS[_state, I.SEND_RST] = S.CLOSED
        STREAM_TRANSITIONS[_state, I.RECV_RST] = S.CLOSED

_REMOTE_INPUTS = frozenset({I.RECV_REPLY, I.RECV_REPLY_FIN, I.RECV_DATA, I.RECV_FIN, I.RECV_RST})


class StreamError(ProtocolError):
    """A received frame the stream's state does not allow; answered with RST_STREAM.

    ``status`` (also ``code``) is the RST_STREAM status to answer with."""

    def __init__(self, status: int) -> None:
        super().__init__(f"frame not allowed in the stream's state (RST {status})", code=status)
        self.status = status


def next_stream_state(state: StreamState, event: StreamInput) -> StreamState | str:
    """The table lookup: the new state, ``DISCARD``, or an error for unlisted pairs."""
    new = STREAM_TRANSITIONS.get((state, event))
    if new is not None:
        return new
    if event in _REMOTE_INPUTS:
        if event in (I.RECV_REPLY, I.RECV_REPLY_FIN):
            raise StreamError(fr.RstStatus.STREAM_IN_USE)
        raise StreamError(fr.RstStatus.STREAM_ALREADY_CLOSED)
    raise SpdyUsageError(f"cannot {event.value} in state {state.value}")


# -- connection state table -----------------------------------------------------------------
class ConnectionState(enum.Enum):
    OPEN = "open"
    GOAWAY_SENT = "goaway-sent"  # we open no new streams, accept none above last-good
    GOAWAY_RECEIVED = "goaway-received"  # we process nothing more from the peer
    CLOSED = "closed"  # both GOAWAYs, or a fatal error


class ConnectionInput(enum.Enum):
    SEND_GOAWAY = "send-goaway"
    RECV_GOAWAY = "recv-goaway"
    FAIL = "fail"


C, CI = ConnectionState, ConnectionInput
CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, ConnectionInput], ConnectionState] = {
    (C.OPEN, CI.SEND_GOAWAY): C.GOAWAY_SENT,
    (C.OPEN, CI.RECV_GOAWAY): C.GOAWAY_RECEIVED,
    (C.OPEN, CI.FAIL): C.CLOSED,
    (C.GOAWAY_SENT, CI.RECV_GOAWAY): C.CLOSED,
    (C.GOAWAY_SENT, CI.FAIL): C.CLOSED,
    (C.GOAWAY_RECEIVED, CI.SEND_GOAWAY): C.CLOSED,
    (C.GOAWAY_RECEIVED, CI.FAIL): C.CLOSED,
    (C.CLOSED, CI.FAIL): C.CLOSED,
}


def next_connection_state(state: ConnectionState, event: ConnectionInput) -> ConnectionState:
    new = CONNECTION_TRANSITIONS.get((state, event))
    if new is None:
        if event is CI.RECV_GOAWAY:
            raise ProtocolError("GOAWAY received twice", code=fr.GoAwayStatus.PROTOCOL_ERROR)
        raise SpdyUsageError(f"cannot {event.value} in connection state {state.value}")
    return new


# -- the connection -------------------------------------------------------------------------
_PING_LIMIT = 1024  # outstanding pings remembered


class SpdyProtocol:
    """One SPDY/3.1 connection, either side. ``client`` is the side that sent the upgrade
    request: it opens odd streams and sends odd pings."""

    def __init__(self, client: bool, limits: SpdyLimits = SpdyLimits()) -> None:
        self.client = client
        self.limits = limits
        self.state = C.OPEN
        self._parser = fr.FrameParser(limits.max_data_length, limits.max_control_length)
        # None once refuse_streams() freed them: no header block is sent or decoded then.
        self._compressor: HeaderCompressor | None = HeaderCompressor()
        self._decompressor: HeaderDecompressor | None = HeaderDecompressor(
            limits.max_header_block, limits.max_headers
        )
        self._streams: dict[int, StreamState] = {}
        self._parity = 1 if client else 0
        self._next_id = 1 if client else 2
        self._next_ping = 1 if client else 2
        self._pings: dict[int, None] = {}
        self._last_peer_id = 0
        self._peer_open = 0
        self._goaway_sent = False
        self._out: list[bytes | memoryview] = []

    # -- inspection -----------------------------------------------------------------------
    def stream_state(self, stream_id: int) -> StreamState:
        """The state of a stream; forgotten streams are CLOSED."""
        return self._streams.get(stream_id, S.CLOSED)

    @property
    def open_streams(self) -> list[int]:
        return list(self._streams)

    def is_local(self, stream_id: int) -> bool:
        return stream_id & 1 == self._parity

    # -- output ---------------------------------------------------------------------------
    def buffers_to_send(self) -> list[bytes | memoryview]:
        """Frames to write, in order, as buffers for ``writelines`` (no joining copy)."""
        out, self._out = self._out, []
        return out

    def data_to_send(self) -> bytes:
        return b"".join(self.buffers_to_send())

    # -- local actions --------------------------------------------------------------------
    def refuse_streams(self) -> None:
        """No more peer streams, no more header blocks: each later SYN_STREAM gets
        RST_STREAM REFUSED_STREAM and no event, and both zlib contexts are freed (the
        peer's inflate window and state alone are 39 KiB, held by every idle exec
        session; issue 10, item 6). Later header blocks are skipped undecoded (framing
        still checked, a HEADERS FIN still half-closes); open_stream/reply raise."""
        self._compressor = None
        self._decompressor = None

    def _compress(self, headers: Mapping[str, HeaderValue], forbidden: frozenset[str]) -> bytes:
        if self._compressor is None:
            raise SpdyUsageError("no header blocks after refuse_streams()")
        return self._compressor.compress(_local_block(headers, forbidden))

    def _decode(self, block: bytes, forbidden: frozenset[str]) -> dict[str, str]:
        """A received header block, checked; ``{}`` once refuse_streams() freed the
        context (the block cannot be decoded, and nothing will act on it)."""
        if self._decompressor is None:
            return {}
        headers = self._decompressor.decode(block)
        check_forbidden(headers, forbidden)
        return headers

    def open_stream(self, headers: Mapping[str, HeaderValue], fin: bool = False) -> int:
        if self.state is not C.OPEN:
            raise SpdyUsageError(f"cannot open a stream in connection state {self.state.value}")
        sid = self._next_id
        if sid > fr.MAX_STREAM_ID:
            raise SpdyUsageError("stream ids exhausted")
        block = self._compress(headers, FORBIDDEN_REQUEST)
        self._next_id += 2
        self._streams[sid] = S.SYN_SENT_FIN if fin else S.SYN_SENT
        flags = fr.FLAG_FIN if fin else 0
        self._out.append(fr.SynStreamFrame(sid, block, flags=flags).serialize())
        return sid

    def reply(
        self, stream_id: int, headers: Mapping[str, HeaderValue] | None = None, fin: bool = False
    ) -> None:
        new = self._local_transition(stream_id, I.SEND_REPLY_FIN if fin else I.SEND_REPLY)
        block = self._compress(headers or {}, FORBIDDEN_RESPONSE)
        self._set(stream_id, new)
        flags = fr.FLAG_FIN if fin else 0
        self._out.append(fr.SynReplyFrame(stream_id, block, flags).serialize())

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, fin: bool = False
    ) -> None:
        """Queue DATA frames: one frame unless ``data`` exceeds ``max_send_data``."""
        size = len(data)
        if not size and not fin:
            return
        state = self.stream_state(stream_id)
        if size:
            state = self._check(stream_id, state, I.SEND_DATA)
        if fin:
            state = self._check(stream_id, state, I.SEND_FIN)
        self._set(stream_id, state)
        out, step = self._out, self.limits.max_send_data
        if size <= step:
            out.append(fr.data_header(stream_id, size, fin))
            if size:
                out.append(data)
            return
        view = memoryview(data).cast("B")
        for off in range(0, size, step):
            chunk = view[off : off + step]
            out.append(fr.data_header(stream_id, len(chunk), fin and off + step >= size))
            out.append(chunk)

    def reset_stream(self, stream_id: int, status: int = CANCEL) -> None:
        """RST_STREAM; a stream already forgotten is left alone."""
        if stream_id not in self._streams:
            return
        self._set(stream_id, self._local_transition(stream_id, I.SEND_RST))
        self._out.append(fr.RstStreamFrame(stream_id, status).serialize())

    def ping(self) -> int:
        ping_id = self._next_ping
        self._next_ping = ping_id + 2 if ping_id + 2 <= fr.MAX_STREAM_ID else 2 - self._parity
        self._pings[ping_id] = None
        if len(self._pings) > _PING_LIMIT:
            del self._pings[next(iter(self._pings))]
        self._out.append(fr.PingFrame(ping_id).serialize())
        return ping_id

    def goaway(self, status: int = fr.GoAwayStatus.OK) -> None:
        """GOAWAY with the highest peer stream we accepted; sent once, later calls no-op."""
        if self._goaway_sent:
            return
        self.state = next_connection_state(self.state, CI.SEND_GOAWAY)
        self._goaway_sent = True
        self._out.append(fr.GoAwayFrame(self._last_peer_id, status).serialize())

    # -- input ----------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Events for the frames ``data`` completes. Nothing is processed after a GOAWAY."""
        events: list[Event] = []
        if self.state in (C.GOAWAY_RECEIVED, C.CLOSED):
            return events
        try:
            for frame in self._parser.feed(data):
                self._handle(frame, events)
                if self.state in (C.GOAWAY_RECEIVED, C.CLOSED):
                    break
        except ProtocolError as exc:
            self._fail(exc)
            raise
        return events

    def _fail(self, exc: ProtocolError) -> None:
        if not self._goaway_sent:
            self._goaway_sent = True
            status = fr.GoAwayStatus.PROTOCOL_ERROR
            self._out.append(fr.GoAwayFrame(self._last_peer_id, status).serialize())
        self.state = next_connection_state(self.state, CI.FAIL)

    def _handle(self, frame: fr.Frame, events: list[Event]) -> None:
        if isinstance(frame, fr.DataFrame):
            self._on_data(frame.stream_id, frame.data, frame.fin, events)
        elif isinstance(frame, fr.SynStreamFrame):
            self._on_syn_stream(frame, events)
        elif isinstance(frame, fr.SynReplyFrame):
            self._on_syn_reply(frame, events)
        elif isinstance(frame, fr.RstStreamFrame):
            if frame.stream_id not in self._streams:
                return  # already forgotten: both sides may reset at once
            if self._remote_transition(frame.stream_id, I.RECV_RST, events) is not None:
                events.append(StreamReset(frame.stream_id, frame.status))
        elif isinstance(frame, fr.PingFrame):
            self._on_ping(frame.ping_id, events)
        elif isinstance(frame, fr.GoAwayFrame):
            self.state = next_connection_state(self.state, CI.RECV_GOAWAY)
            events.append(GoAwayReceived(frame.last_good_stream_id, frame.status))
        elif isinstance(frame, fr.HeadersFrame):
            self._on_headers(frame, events)
        # SETTINGS and WINDOW_UPDATE: parsed, then dropped (protocol.md 3.6).

    def _on_data(self, sid: int, data: bytes | memoryview, fin: bool, events: list[Event]) -> None:
        if sid not in self._streams:
            return  # unknown or already forgotten: ignored, as spdystream does
        if data and self._remote_transition(sid, I.RECV_DATA, events) in (None, DISCARD):
            return
        if fin and self._remote_transition(sid, I.RECV_FIN, events) in (None, DISCARD):
            return
        if data or fin:
            events.append(DataReceived(sid, data, fin))

    def _on_syn_stream(self, frame: fr.SynStreamFrame, events: list[Event]) -> None:
        headers = self._decode(frame.header_block, FORBIDDEN_REQUEST)
        sid = frame.stream_id
        if sid <= self._last_peer_id or self.is_local(sid):
            self._out.append(fr.RstStreamFrame(sid, fr.RstStatus.PROTOCOL_ERROR).serialize())
            return
        self._last_peer_id = sid
        if self._goaway_sent or self._decompressor is None:
            self._out.append(fr.RstStreamFrame(sid, fr.RstStatus.REFUSED_STREAM).serialize())
            return
        if self._peer_open >= self.limits.max_streams:
            # Refused, not fatal: the peer may retry once one of its streams has ended.
            self._out.append(fr.RstStreamFrame(sid, fr.RstStatus.REFUSED_STREAM).serialize())
            return
        fin = bool(frame.flags & fr.FLAG_FIN)
        self._streams[sid] = S.SYN_RECEIVED_FIN if fin else S.SYN_RECEIVED
        self._peer_open += 1
        events.append(StreamOpened(sid, headers, fin))

    def _on_syn_reply(self, frame: fr.SynReplyFrame, events: list[Event]) -> None:
        headers = self._decode(frame.header_block, FORBIDDEN_RESPONSE)
        fin = bool(frame.flags & fr.FLAG_FIN)
        sid = frame.stream_id
        if sid not in self._streams:
            return
        if self._remote_transition(sid, I.RECV_REPLY_FIN if fin else I.RECV_REPLY, events):
            events.append(StreamReplied(sid, headers, fin))

    def _on_headers(self, frame: fr.HeadersFrame, events: list[Event]) -> None:
        # spdystream picks the forbidden set by the id's parity, whoever opened it.
        self._decode(
            frame.header_block,
            FORBIDDEN_REQUEST if frame.stream_id % 2 == 0 else FORBIDDEN_RESPONSE,
        )
        if frame.flags & fr.FLAG_FIN:
            self._on_data(frame.stream_id, b"", True, events)

    def _on_ping(self, ping_id: int, events: list[Event]) -> None:
        if ping_id & 1 == self._parity:
            # The answer to one of ours: never echo it (protocol.md 3.7, the ping storm).
            if ping_id in self._pings:
                del self._pings[ping_id]
                events.append(PingAcknowledged(ping_id))
        else:
            self._out.append(fr.PingFrame(ping_id).serialize())

    # -- stream transitions ---------------------------------------------------------------
    def _check(self, sid: int, state: StreamState, event: StreamInput) -> StreamState:
        if state is S.CLOSED:
            raise SpdyUsageError(f"stream {sid} is closed")
        new = next_stream_state(state, event)
        assert isinstance(new, StreamState)
        return new

    def _local_transition(self, sid: int, event: StreamInput) -> StreamState:
        return self._check(sid, self.stream_state(sid), event)

    def _remote_transition(
        self, sid: int, event: StreamInput, events: list[Event]
    ) -> StreamState | str | None:
        """Apply a received input; None when it broke a stream rule (stream reset)."""
        try:
            new = next_stream_state(self._streams[sid], event)
        except StreamError as exc:
            self._set(sid, S.CLOSED)
            self._out.append(fr.RstStreamFrame(sid, exc.status).serialize())
            events.append(StreamReset(sid, exc.status, remote=False))
            return None
        if isinstance(new, StreamState):
            self._set(sid, new)
        return new

    def _set(self, sid: int, state: StreamState) -> None:
        if state is not S.CLOSED:
            self._streams[sid] = state
        elif self._streams.pop(sid, None) is not None and not self.is_local(sid):
            self._peer_open -= 1


def _local_block(headers: Mapping[str, HeaderValue], forbidden: frozenset[str]) -> bytes:
    try:
        lowered = {name.lower() for name in headers}
        if lowered & forbidden:
            raise ValueError(f"headers {sorted(lowered & forbidden)} are not allowed here")
        return encode_block(headers)
    except ValueError as exc:
        raise SpdyUsageError(str(exc)) from exc

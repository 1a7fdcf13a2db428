"""SPDY/3.1 frame codec, as moby/spdystream reads and writes frames (protocol.md 3.2/3.3).

Frames carry header blocks still compressed: decompression needs the per-connection zlib
context, which lives in :mod:`hatchway.protocol.spdy_header` and is driven in frame order by
:mod:`hatchway.protocol.spdy`. Every check that makes spdystream's frame read fail (and so
tears down the connection) raises :class:`~hatchway.errors.ProtocolError` here; a frame
longer than the configured bound raises :class:`~hatchway.errors.LimitExceededError` as
soon as its 8-byte header is seen, before any payload is buffered.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from hatchway.errors import LimitExceededError, ProtocolError
from hatchway.protocol.views import take_views

VERSION = 3
HEADER_SIZE = 8
#: The 24-bit length field's ceiling.
MAX_LENGTH = 0xFFFFFF
MAX_STREAM_ID = 0x7FFFFFFF

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_CONTROL = struct.Struct(">HHI")  # 0x8000|version, type, flags<<24|length


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    return _CONTROL.pack(0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def data_header(stream_id: int, length: int, fin: bool = False) -> bytes:
    """The 8-byte header of a DATA frame (the hot path writes header and payload apart)."""
    return _U32x2.pack(stream_id & MAX_STREAM_ID, (FLAG_FIN << 24 if fin else 0) | length)


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    data: bytes | memoryview = b""  # received payloads may be views of the chunk
    fin: bool = False

    def serialize(self) -> bytes:
        return data_header(self.stream_id, len(self.data), self.fin) + bytes(self.data)


@dataclass(frozen=True, slots=True)
class SynStreamFrame:
    stream_id: int
    header_block: bytes
    associated_to: int = 0
    priority: int = 0  # 0..7, top three bits of the priority byte
    slot: int = 0
    flags: int = 0  # FLAG_FIN | FLAG_UNIDIRECTIONAL

    def serialize(self) -> bytes:
        head = _U32x2.pack(self.stream_id, self.associated_to)
        prio = bytes(((self.priority & 7) << 5, self.slot))
        return _control(FrameType.SYN_STREAM, self.flags, head + prio + self.header_block)


@dataclass(frozen=True, slots=True)
class SynReplyFrame:
    stream_id: int
    header_block: bytes
    flags: int = 0

    def serialize(self) -> bytes:
        payload = _U32.pack(self.stream_id) + self.header_block
        return _control(FrameType.SYN_REPLY, self.flags, payload)


@dataclass(frozen=True, slots=True)
class RstStreamFrame:
    stream_id: int
    status: int

    def serialize(self) -> bytes:
        return _control(FrameType.RST_STREAM, 0, _U32x2.pack(self.stream_id, self.status))


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    #: (entry flags, id, value) triples
    entries: tuple[tuple[int, int, int], ...] = ()
    flags: int = 0

    def serialize(self) -> bytes:
        parts = [_U32.pack(len(self.entries))]
        parts += [_U32x2.pack((f << 24) | i, v) for f, i, v in self.entries]
        return _control(FrameType.SETTINGS, self.flags, b"".join(parts))


@dataclass(frozen=True, slots=True)
class PingFrame:
    ping_id: int

    def serialize(self) -> bytes:
        return _control(FrameType.PING, 0, _U32.pack(self.ping_id))


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK

    def serialize(self) -> bytes:
        payload = _U32x2.pack(self.last_good_stream_id, self.status)
        return _control(FrameType.GOAWAY, 0, payload)


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    header_block: bytes
    flags: int = 0

    def serialize(self) -> bytes:
        payload = _U32.pack(self.stream_id) + self.header_block
        return _control(FrameType.HEADERS, self.flags, payload)


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    stream_id: int
    delta: int

    def serialize(self) -> bytes:
        payload = _U32x2.pack(self.stream_id, self.delta)
        return _control(FrameType.WINDOW_UPDATE, 0, payload)


Frame = (
    DataFrame
    | SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
)

_PROTO = GoAwayStatus.PROTOCOL_ERROR


def _fail(message: str) -> ProtocolError:
    return ProtocolError(message, code=_PROTO)


def _need_stream(stream_id: int, what: str) -> int:
    if stream_id == 0:
        raise _fail(f"{what} with stream id 0")
    return stream_id


def _syn_stream(flags: int, p: bytes) -> Frame:
    if len(p) < 10:
        raise _fail(f"SYN_STREAM payload of {len(p)} bytes")
    sid, assoc = _U32x2.unpack_from(p)
    sid = _need_stream(sid & MAX_STREAM_ID, "SYN_STREAM")
    return SynStreamFrame(sid, p[10:], assoc & MAX_STREAM_ID, p[8] >> 5, p[9], flags)


def _syn_reply(flags: int, p: bytes) -> Frame:
    if len(p) < 4:
        raise _fail(f"SYN_REPLY payload of {len(p)} bytes")
    sid = _need_stream(_U32.unpack_from(p)[0] & MAX_STREAM_ID, "SYN_REPLY")
    return SynReplyFrame(sid, p[4:], flags)


def _headers(flags: int, p: bytes) -> Frame:
    if len(p) < 4:
        raise _fail(f"HEADERS payload of {len(p)} bytes")
    sid = _need_stream(_U32.unpack_from(p)[0] & MAX_STREAM_ID, "HEADERS")
    return HeadersFrame(sid, p[4:], flags)


def _rst_stream(flags: int, p: bytes) -> Frame:
    if len(p) != 8 or flags:
        raise _fail(f"RST_STREAM with length {len(p)}, flags {flags:#x}")
    sid, status = _U32x2.unpack(p)
    if status == 0:
        raise _fail("RST_STREAM with status 0")
    return RstStreamFrame(_need_stream(sid & MAX_STREAM_ID, "RST_STREAM"), status)


def _settings(flags: int, p: bytes) -> Frame:
    if len(p) < 4 or (len(p) - 4) % 8 or _U32.unpack_from(p)[0] != (len(p) - 4) // 8:
        raise _fail(f"SETTINGS with a bad length {len(p)}")
    entries = []
    for off in range(4, len(p), 8):
        word, value = _U32x2.unpack_from(p, off)
        entries.append((word >> 24, word & 0xFFFFFF, value))
    return SettingsFrame(tuple(entries), flags)


def _ping(flags: int, p: bytes) -> Frame:
    if len(p) != 4 or flags:
        raise _fail(f"PING with length {len(p)}, flags {flags:#x}")
    ping_id = _U32.unpack(p)[0]
    if ping_id == 0:
        raise _fail("PING with id 0")
    return PingFrame(ping_id)


def _goaway(flags: int, p: bytes) -> Frame:
    if len(p) != 8 or flags:
        raise _fail(f"GOAWAY with length {len(p)}, flags {flags:#x}")
    last, status = _U32x2.unpack(p)
    return GoAwayFrame(last & MAX_STREAM_ID, status)


def _window_update(flags: int, p: bytes) -> Frame:
    if len(p) != 8 or flags:
        raise _fail(f"WINDOW_UPDATE with length {len(p)}, flags {flags:#x}")
    sid, delta = _U32x2.unpack(p)
    return WindowUpdateFrame(sid & MAX_STREAM_ID, delta & MAX_STREAM_ID)


_CONTROL_PARSERS = {
    FrameType.SYN_STREAM: _syn_stream,
    FrameType.SYN_REPLY: _syn_reply,
    FrameType.RST_STREAM: _rst_stream,
    FrameType.SETTINGS: _settings,
    FrameType.PING: _ping,
    FrameType.GOAWAY: _goaway,
    FrameType.HEADERS: _headers,
    FrameType.WINDOW_UPDATE: _window_update,
}


class FrameParser:
    """Incremental frame reader: ``feed(bytes)`` returns the frames now complete.

    ``max_data_length`` and ``max_control_length`` bound a frame's payload; the bound is
    checked on the header, so an oversize frame never gets buffered. The version field is
    not checked (spdystream never checks it either).

    Received chunks are kept as they came; a DATA payload within one chunk comes out as
    a view of it (no copy), one spanning chunks is joined once.
    """

    def __init__(self, max_data_length: int = MAX_LENGTH, max_control_length: int = MAX_LENGTH):
        self.max_data_length = max_data_length
        self.max_control_length = max_control_length
        self._pending: list[memoryview] = []
        self._size = 0

    @property
    def buffered(self) -> int:
        return self._size

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if data:
            # Views of it are handed out: never of a buffer the caller may reuse.
            chunk = data if isinstance(data, bytes) else bytes(data)
            self._pending.append(memoryview(chunk))
            self._size += len(chunk)
        frames: list[Frame] = []
        while self._size >= HEADER_SIZE:
            word, length = _U32x2.unpack_from(self._head())
            flags, length = length >> 24, length & MAX_LENGTH
            control = word & 0x80000000
            self._check_length(control, word, length)
            if self._size - HEADER_SIZE < length:
                break
            self._skip(HEADER_SIZE)
            if control:
                payload = bytes(self._payload(length))
                frames.append(_CONTROL_PARSERS[word & 0xFFFF](flags, payload))
            else:
                sid = _need_stream(word, "DATA")
                frames.append(DataFrame(sid, self._payload(length), bool(flags & FLAG_FIN)))
        return frames

    def _head(self) -> memoryview:
        """A view holding at least the next frame's 8-byte header."""
        pending = self._pending
        if len(pending[0]) < HEADER_SIZE:
            size = self._size
            parts = self._take(HEADER_SIZE)
            pending.insert(0, memoryview(b"".join(parts)))
            self._size = size
        return pending[0]

    def _skip(self, n: int) -> None:
        head = self._pending[0]
        self._size -= n
        if len(head) == n:
            del self._pending[0]
        else:
            self._pending[0] = head[n:]

    def _payload(self, n: int) -> bytes | memoryview:
        if not n:
            return b""
        if len(self._pending[0]) >= n:
            view = self._pending[0][:n]
            self._skip(n)
            return view
        return b"".join(self._take(n))

    def _take(self, n: int) -> list[memoryview]:
        self._size -= n
        return take_views(self._pending, n)

    def _clear(self) -> None:
        self._pending.clear()
        self._size = 0

    def _check_length(self, control: int, word: int, length: int) -> None:
        if control:
            if (word & 0xFFFF) not in _CONTROL_PARSERS:
                self._clear()
                raise _fail(f"unknown control frame type {word & 0xFFFF}")
            if length > self.max_control_length:
                self._clear()
                raise LimitExceededError(
                    f"control frame of {length} bytes exceeds {self.max_control_length}",
                    code=_PROTO,
                )
        elif length > self.max_data_length:
            self._clear()
            raise LimitExceededError(
                f"DATA frame of {length} bytes exceeds {self.max_data_length}", code=_PROTO
            )


def parse_frames(data: bytes) -> list[Frame]:
    """All frames in ``data``, which must hold whole frames only."""
    parser = FrameParser()
    frames = parser.feed(data)
    if parser.buffered:
        raise _fail(f"{parser.buffered} bytes of a truncated frame")
    return frames

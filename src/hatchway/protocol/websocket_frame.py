"""The hot path of WebSocket framing (RFC 6455 section 5.2) for channel-protocol data.

``websockets``' sans-I/O :class:`~websockets.protocol.Protocol` stays in charge of the
connection: control frames, the closing handshake, fragmentation and every error. It
copies each payload several times, though (its stream reader's buffer, the frame,
the message), so unfragmented binary data messages -- nearly every byte of an exec
session -- take this path instead:

* :class:`FrameSplitter` cuts received bytes into frames. A binary, final, correctly
  masked frame within the size limit comes out as :class:`FastMessage`: the channel
  byte and the payload as views of the received chunks (unmasked with
  ``websockets.speedups.apply_mask`` on the server side). Every other frame comes out
  whole as raw bytes for ``Protocol.receive_data``, which therefore always sees complete
  frames and stays at a frame boundary. Once the caller says the connection is no
  longer open, or a frame is too big to hold, everything goes to the Protocol as it
  arrives (:attr:`FrameSplitter.passthrough`), so its checks and errors are unchanged.
* :func:`data_frame` builds a binary data message's frame as buffers for
  ``writelines``: the header (with the channel byte, masked on the client side) and
  the payload, unmasked data passed through without a copy.

The bytes on the wire are those ``Protocol.send_binary`` would write (mask keys aside,
which are random either way).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from websockets.frames import Opcode

from hatchway.protocol.views import take_views

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

Buffer = bytes | memoryview

_FIN_BINARY = 0x80 | Opcode.BINARY
_MASK_BIT = 0x80
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
#: The longest header: 2 bytes, 8 of extended length, 4 of mask key.
MAX_HEADER = 14
#: Messages up to this size go out as one buffer (one TLS record, not two).
SMALL = 1024


@dataclass(frozen=True, slots=True)
class FastMessage:
    """A complete unfragmented binary message: its first byte and the rest."""

    channel: int
    data: list[Buffer]
    size: int


def data_frame(channel: int, data: Buffer, *, mask: bool) -> list[Buffer]:
    """The frame of the binary message ``channel byte + data``, as buffers to write."""
    length = len(data) + 1
    head2 = _MASK_BIT if mask else 0
    if length < 126:
        header = bytes((_FIN_BINARY, head2 | length))
    elif length < 65536:
        header = _H16.pack(_FIN_BINARY, head2 | 126, length)
    else:
        header = _H64.pack(_FIN_BINARY, head2 | 127, length)
    if not mask:
        if length <= SMALL:
            return [header + bytes((channel,)) + data]
        return [header + bytes((channel,)), data]
    key = os.urandom(4)
    head = header + key + bytes((channel ^ key[0],))
    if not data:
        return [head]
    masked = apply_mask(data, key[1:] + key[:1])
    return [head + masked] if length <= SMALL else [head, masked]


class FrameSplitter:
    """Received bytes in, :class:`FastMessage` or raw frame bytes out (see module doc).

    ``server`` is the side that expects masked frames; ``max_size`` is the Protocol's
    message limit: a bigger frame is never held here.
    """

    def __init__(self, *, server: bool, max_size: int | None) -> None:
        self._masked = _MASK_BIT if server else 0
        self._max = max_size
        self._pending: list[memoryview] = []
        self._size = 0
        #: Everything now goes to the Protocol unparsed.
        self.passthrough = False

    @property
    def buffered(self) -> int:
        return self._size

    def feed(self, data: bytes) -> None:
        if data:
            self._pending.append(memoryview(data))
            self._size += len(data)

    def take_all(self) -> bytes:
        """What is buffered, for the Protocol (at EOF, or when passing through)."""
        out = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        return out

    def next(self, fast_ok: bool) -> FastMessage | bytes | None:
        """The next frame (``None`` until one is complete). With ``fast_ok`` false (the
        Protocol is mid-message) data frames also come out raw."""
        if self.passthrough:
            return self.take_all() or None
        head = self._header()
        if head is None:
            return None
        head1, head2, hlen, length = head
        if self._max is not None and length > self._max:
            self.passthrough = True  # the Protocol fails it on the header
            return self.take_all()
        total = hlen + length
        if self._size < total:
            return None
        fast = fast_ok and head1 == _FIN_BINARY and (head2 & _MASK_BIT) == self._masked
        if not fast or not length:
            return b"".join(self._take(total))
        parts = self._take(total)
        header, parts = _split(parts, hlen)
        if self._masked:
            parts = _unmask(parts, bytes(header[-4:]))
        first, data = _split(parts, 1)
        return FastMessage(first[0], data, length - 1)

    def _header(self) -> tuple[int, int, int, int] | None:
        """``(byte 1, byte 2, header length, payload length)`` of the next frame."""
        if self._size < 2:
            return None
        view = self._pending[0]
        if len(view) < MAX_HEADER and len(self._pending) > 1:
            # A header across chunks: join its (at most 14) bytes, nothing more.
            size = self._size
            view = memoryview(b"".join(self._take(min(MAX_HEADER, size))))
            self._pending.insert(0, view)
            self._size = size
        head1, head2 = view[0], view[1]
        length = head2 & 0x7F
        hlen = 2
        if length == 126:
            hlen = 4
            if len(view) < hlen:
                return None
            length = _H16.unpack_from(view)[2]
        elif length == 127:
            hlen = 10
            if len(view) < hlen:
                return None
            length = _H64.unpack_from(view)[2]
        if head2 & _MASK_BIT:
            hlen += 4
        return head1, head2, hlen, length

    def _take(self, n: int) -> list[memoryview]:
        """The first ``n`` buffered bytes, as views."""
        self._size -= n
        return take_views(self._pending, n)


def _split(parts: list[Buffer], n: int) -> tuple[bytes, list[Buffer]]:
    """The first ``n`` bytes of ``parts`` (joined) and the rest of the views."""
    rest = list(parts)
    head = take_views(rest, n)
    return b"".join(head), [v for v in rest if len(v)]


def _unmask(parts: list[Buffer], key: bytes) -> list[Buffer]:
    out: list[Buffer] = []
    offset = 0
    for view in parts:
        shift = offset % 4
        out.append(apply_mask(view, key[shift:] + key[:shift]))
        offset += len(view)
    return out

"""SPDY/3 header blocks: the name/value encoding and its zlib context (protocol.md 3.4).

Each direction of a connection has one zlib stream, primed with the SPDY/3 dictionary and
sync-flushed after every block, so one :class:`HeaderCompressor` and one
:class:`HeaderDecompressor` live as long as the connection. Decoding is bounded: a block
that inflates past ``max_block`` bytes stops inflating at that point (a zlib bomb costs at
most ``max_block`` bytes) and raises :class:`~hatchway.errors.LimitExceededError`.

Values with several parts are joined with NUL on the wire; :func:`decode_block` leaves
the NUL in the value (``"a\\x00b"``), :func:`encode_block` accepts a string (which may
hold NULs) or a list of strings. Bytes that are not UTF-8 survive a round trip as
surrogate escapes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence

from hatchway.errors import LimitExceededError, ProtocolError

_PROTO = 1  # GOAWAY PROTOCOL_ERROR

# The SPDY draft 3 dictionary (section 2.6.10.1): 65 length-prefixed words followed by
# a run of plain text. Kept as words so it can be read; checked below by length and
# Adler-32, which is also the DICTID a peer puts on the wire.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status|200 OK|version HTTP/1.1 url public set-cookie "
    "keep-alive origin"
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505"
    "203 Non-Authoritative Information"
    "204 No Content"
    "301 Moved Permanently"
    "400 Bad Request"
    "401 Unauthorized"
    "403 Forbidden"
    "404 Not Found"
    "500 Internal Server Error"
    "501 Not Implemented"
    "503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    "application/xhtml+xml,text/plain,text/javascript,public"
    "privatemax-age=gzip,deflate,sdch"
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _build_dictionary() -> bytes:
    # "200 OK" and "HTTP/1.1" hold spaces, so the word list splits on "|" around them.
    words: list[str] = []
    for i, part in enumerate(_WORDS.split("|")):
        words += [part] if i % 2 else part.split()
    raw = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    return raw + _TAIL.encode()


DICTIONARY = _build_dictionary()
DICTIONARY_ID = 0xE3C6A7C2
assert len(DICTIONARY) == 1423, len(DICTIONARY)
assert zlib.adler32(DICTIONARY) == DICTIONARY_ID

#: Names a SYN_STREAM (request) and a SYN_REPLY (response) must not carry.
FORBIDDEN_REQUEST = frozenset(
    {"connection", "host", "keep-alive", "proxy-connection", "transfer-encoding"}
)
FORBIDDEN_RESPONSE = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding"}
)

_U32 = struct.Struct(">I")
HeaderValue = str | Sequence[str]


def _fail(message: str) -> ProtocolError:
    return ProtocolError(message, code=_PROTO)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def encode_block(headers: Mapping[str, HeaderValue]) -> bytes:
    """The uncompressed name/value block. Names are lower-cased; a name that repeats
    after lower-casing is a ``ValueError`` (spdystream would kill the connection)."""
    parts = [_U32.pack(len(headers))]
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if lower in seen:
            raise ValueError(f"header {lower!r} given twice")
        seen.add(lower)
        joined = value if isinstance(value, str) else "\x00".join(value)
        for item in (_raw(lower), _raw(joined)):
            parts += [_U32.pack(len(item)), item]
    return b"".join(parts)


def decode_block(raw: bytes, max_headers: int = 64) -> dict[str, str]:
    """Parse an uncompressed block, rejecting it as spdystream does: upper-case or
    repeated names, truncation, trailing bytes; more than ``max_headers`` pairs is a
    :class:`LimitExceededError`."""
    if len(raw) < 4:
        raise _fail("header block shorter than its pair count")
    count = _U32.unpack_from(raw)[0]
    if count > max_headers:
        raise LimitExceededError(f"{count} headers exceed {max_headers}", code=_PROTO)
    headers: dict[str, str] = {}
    pos = 4
    for _ in range(count):
        name, pos = _field(raw, pos)
        value, pos = _field(raw, pos)
        if name != name.lower():
            raise _fail(f"header name {name!r} is not lower-case")
        if name in headers:
            raise _fail(f"header {name!r} appears twice")
        headers[name] = value
    if pos != len(raw):
        raise _fail(f"{len(raw) - pos} bytes after the header block")
    return headers


def _field(raw: bytes, pos: int) -> tuple[str, int]:
    if pos + 4 > len(raw):
        raise _fail("header block truncated")
    size = _U32.unpack_from(raw, pos)[0]
    pos += 4
    if pos + size > len(raw):
        raise _fail("header block truncated")
    return _text(raw[pos : pos + size]), pos + size


def check_forbidden(names: Iterable[str], forbidden: frozenset[str]) -> None:
    for name in names:
        if name in forbidden:
            raise _fail(f"header {name!r} is not allowed here")


def split_values(value: str) -> list[str]:
    """The values a NUL-joined header value holds."""
    return value.split("\x00")


#: Our deflate stream's window (2 KiB: still holds the whole 1,423-byte dictionary) and
#: memLevel. zlib's defaults (15, 8) cost 256 KiB per connection (window, prev and head
#: tables, pending buffer; the head table is zero-filled at once) for header blocks of a
#: few hundred bytes -- the node agent held that for every idle SPDY exec session. These
#: cost about 10 KiB. Any inflater takes any window up to 32 KiB (RFC 1950's CINFO;
#: Go's compress/zlib, which kubectl's spdystream uses, and Python's zlib alike).
COMPRESS_WBITS = 11
COMPRESS_MEMLEVEL = 1


class HeaderCompressor:
    """One direction's zlib stream: level 9, the SPDY dictionary, a sync flush per block,
    a small window and memLevel (:data:`COMPRESS_WBITS`, :data:`COMPRESS_MEMLEVEL`)."""

    def __init__(self, wbits: int = COMPRESS_WBITS, mem_level: int = COMPRESS_MEMLEVEL) -> None:
        self._z = zlib.compressobj(
            9, zlib.DEFLATED, wbits, mem_level, zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY
        )

    def compress(self, block: bytes) -> bytes:
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, headers: Mapping[str, HeaderValue]) -> bytes:
        return self.compress(encode_block(headers))


class HeaderDecompressor:
    """The peer's zlib stream, inflated one frame's block at a time, with bounds."""

    def __init__(self, max_block: int = 64 * 1024, max_headers: int = 64) -> None:
        self.max_block = max_block
        self.max_headers = max_headers
        self._z = zlib.decompressobj(zdict=DICTIONARY)

    def decompress(self, data: bytes) -> bytes:
        try:
            out = self._z.decompress(data, self.max_block + 1)
        except zlib.error as exc:
            raise _fail(f"bad compressed header block: {exc}") from exc
        if len(out) > self.max_block:
            raise LimitExceededError(
                f"header block inflates past {self.max_block} bytes", code=_PROTO
            )
        if self._z.eof or self._z.unused_data:
            raise _fail("header block ends the zlib stream")
        return out

    def decode(self, data: bytes) -> dict[str, str]:
        return decode_block(self.decompress(data), self.max_headers)

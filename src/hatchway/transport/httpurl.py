"""URLs, limits and header checks of the HTTP/1.1 client, without the client: shared by
the asyncio client (:mod:`hatchway.transport.httpclient`) and the blocking exec path
(:mod:`hatchway.client.blocking`), which imports neither asyncio nor h11."""

from __future__ import annotations

import _socket
import re
from collections.abc import Iterable, Mapping

from hatchway import __version__
from hatchway.errors import HatchwayError
from hatchway.types import named_tuple

USER_AGENT = f"hatchway/{__version__}"
MAX_RESPONSE_HEAD = 64 * 1024
MAX_RESPONSE_BODY = 64 * 1024 * 1024
#: What a refused upgrade's body may hold (client-go reads 64 KiB too).
MAX_REFUSAL_BODY = 64 * 1024

HeadersIn = Mapping[str, str] | Iterable[tuple[str, str]] | None

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")


class HeaderInjectionError(HatchwayError, ValueError):
    """A header name, value or request target would break the HTTP framing."""


def check_header(name: str | bytes, value: str | bytes) -> tuple[bytes, bytes]:
    """The header as bytes, or :class:`HeaderInjectionError` if it could inject."""
    n = name.encode("latin-1") if isinstance(name, str) else bytes(name)
    v = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if not _TOKEN.match(n):
        raise HeaderInjectionError(f"invalid header name {n!r}")
    if _BAD_VALUE.search(v):
        raise HeaderInjectionError(f"invalid value for header {n.decode()!r}")
    return n, v


def check_headers(headers: HeadersIn) -> list[tuple[bytes, bytes]]:
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return [check_header(n, v) for n, v in items]


# RFC 3986 appendix B's expression with the "//" required: scheme, authority, path,
# query; the fragment is dropped (a client never sends it).
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?", re.S)
# RFC 3986 reg-name: unreserved, percent-encoded and sub-delims characters.
_REG_NAME = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%-]*")
_PORT = re.compile(r"[0-9]{1,5}")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


@named_tuple
class UrlParts:
    """An absolute URL split as :func:`split_url` splits it."""

    scheme: str  # lower case
    host: str  # lower case; an IPv6 address without its brackets
    port: int | None  # None when the URL names none
    path: str
    query: str


def split_url(url: str) -> UrlParts:
    """``scheme://[userinfo@]host[:port][/path][?query][#fragment]`` split into its
    parts, or :class:`ValueError`: what ``urllib.parse.urlsplit`` gives for such a URL,
    stricter, and without importing it (with the ``ipaddress`` it imports: ~2 ms of an
    exec). No space or control character anywhere (urlsplit drops tabs and newlines
    silently and keeps spaces in a host), a host of RFC 3986 reg-name characters or a
    bracketed IPv6 address, a port of digits up to 65535. A userinfo is not part of the
    result (as urlsplit's ``hostname``): a client here never sends it. A space or control
    character is a :class:`HeaderInjectionError` (a ValueError): in a request target it
    would break the request line."""
    if _CONTROL_OR_SPACE.search(url):
        raise HeaderInjectionError(f"invalid character in URL {url!r}")
    match = _URL.fullmatch(url)
    if match is None:
        raise ValueError(f"not an absolute URL: {url!r}")
    scheme, authority, path, query = match.groups()
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        try:
            _socket.inet_pton(_socket.AF_INET6, host)
        except OSError:
            bracket = ""
        if not bracket:
            raise ValueError(f"invalid IPv6 address in URL {url!r}")
    else:
        host, colon, port_text = hostport.partition(":")
        rest = colon + port_text
        if not _REG_NAME.fullmatch(host):
            raise ValueError(f"invalid host in URL {url!r}")
    port = None
    if rest not in ("", ":"):
        if rest[0] != ":" or not _PORT.fullmatch(rest[1:]) or int(rest[1:]) > 65535:
            raise ValueError(f"invalid port in URL {url!r}")
        port = int(rest[1:])
    return UrlParts(scheme.lower(), host.lower(), port, path, query or "")


@named_tuple
class Origin:
    """Where a URL sends a request; every field ASCII (:func:`split_url` lets in no
    other host), so the Host header is written without the idna codec."""

    scheme: str
    host: str
    port: int
    target: str
    host_header: str


def parse_url(url: str) -> Origin:
    """Scheme, host (IPv6 without brackets), port, request target and Host header; a
    space or control character anywhere is split_url's :class:`HeaderInjectionError`."""
    parts = split_url(url)
    scheme = parts.scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme in {url!r}")
    host = parts.host
    if not host:
        raise ValueError(f"no host in URL {url!r}")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    return Origin(scheme, host, port, target, host_header)

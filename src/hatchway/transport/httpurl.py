"""URLs, limits and header checks of the HTTP/1.1 client, without the client: shared by
the asyncio client (:mod:`hatchway.transport.httpclient`) and the blocking exec path
(:mod:`hatchway.client.blocking`), which imports neither asyncio nor h11."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from hatchway import __version__
from hatchway.errors import HatchwayError

USER_AGENT = f"hatchway/{__version__}"
MAX_RESPONSE_HEAD = 64 * 1024
MAX_RESPONSE_BODY = 64 * 1024 * 1024
#: What a refused upgrade's body may hold (client-go reads 64 KiB too).
MAX_REFUSAL_BODY = 64 * 1024

HeadersIn = Mapping[str, str] | Iterable[tuple[str, str]] | None

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")


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


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    target: str
    host_header: str


def parse_url(url: str) -> Origin:
    """Scheme, host (IPv6 without brackets), port, request target and Host header."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme in {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in URL {url!r}")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _BAD_TARGET.search(target.encode("utf-8")):
        raise HeaderInjectionError(f"invalid request target {target!r}")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    return Origin(scheme, host, port, target, host_header)

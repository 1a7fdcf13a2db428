"""A small client for etcd's JSON gateway on Hatchway's own HTTP client.

Why the gateway and not a gRPC library (measured on this machine, etcd 3.4.23, Python
3.11, December 2026):

- ``aetcd`` 1.0.0 opens only ``grpc.aio.insecure_channel``: no TLS at all, so no mutual
  TLS to etcd. ``etcetra`` 0.1.19 offers TLS only against the system trust store, with
  no client certificate and no private CA. Kubernetes' own etcd is mutual TLS.
- Both pull in grpcio and protobuf: 48 MB and 50 MB of site-packages (the two even
  conflict on grpcio versions), against nothing new for the gateway.
- Cost per request: aetcd 1.5 ms per put and 0.75-1.3 ms per get; gateway 2.4 ms per put
  and 1.2-1.5 ms per get (500 sequential requests each, a loaded 2-core machine, etcd's
  fsync inside both). About 1 ms more per write, which the API server's own work
  dwarfs, for TLS we control with :mod:`hatchway.transport.tls` and every byte bounded.
- The gateway carries all the watch semantics the store needs: ``start_revision``,
  ``prev_kv``, ``progress_notify`` (bookmarks), and ``compact_revision`` on a watch from
  a compacted revision (protocol.md 10.1).

Requests go to the first endpoint that answers; a connection failure moves to the next.
The HTTP client is given (``hatchway.transport.http.HttpClient`` in the API server): the
store sits beside the transport layer, not above it (DESIGN.md, package layout).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from hatchway.errors import ConnectionClosedError
from hatchway.store.etcdwire import EtcdError, decode

T = TypeVar("T")


class Response(Protocol):
    status: int
    body: bytes


class StreamingResponse(Protocol):
    status: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def read(self, limit: int = ...) -> bytes: ...
    async def aclose(self) -> None: ...
    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, *exc_info: object) -> None: ...


class HttpClient(Protocol):
    """What :class:`hatchway.transport.http.HttpClient` offers that this client uses."""

    async def request(self, method: str, url: str, **kwargs: Any) -> Any: ...
    async def stream(self, method: str, url: str, **kwargs: Any) -> Any: ...
    async def close(self) -> None: ...


#: The most one answer (a page of a list) may hold; etcd's own request limit is 1.5 MiB a
#: value, and a list page holds at most ``page_size`` of them.
MAX_RESPONSE = 64 * 1024 * 1024


class EtcdUnavailableError(ConnectionClosedError):
    """No etcd endpoint could be reached. ``maybe_sent``: some endpoint failed after
    the request may have reached it (anything but a refused connection), so a write
    may have been applied."""

    def __init__(self, message: str, maybe_sent: bool = True) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class EtcdClient:
    """``EtcdClient(["https://10.0.0.1:2379", ...], HttpClient(), ssl_context=ctx)``."""

    def __init__(
        self,
        endpoints: list[str],
        http: HttpClient,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        max_response: int = MAX_RESPONSE,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        for url in endpoints:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"etcd endpoint must be http(s)://host:port, not {url!r}")
            if parts.path not in ("", "/") or parts.query or parts.username:
                raise ValueError(f"etcd endpoint must be http(s)://host:port, not {url!r}")
        self.endpoints = [url.rstrip("/") for url in endpoints]
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.max_response = max_response
        self._http = http
        self._current = 0

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    async def _first_answer(self, send: Callable[[str], Awaitable[T]]) -> tuple[T, bool]:
        """``send(endpoint)`` to each endpoint in turn, from the one that answered last;
        the first answer (whatever its status) and whether an endpoint before it failed
        after the request may have reached it; or :class:`EtcdUnavailableError` naming
        every endpoint's failure."""
        failures = []
        maybe_sent = False
        for index in self._order():
            try:
                answer = await send(self.endpoints[index])
            except (OSError, ConnectionClosedError, TimeoutError) as exc:
                failures.append(f"{self.endpoints[index]}: {exc or type(exc).__name__}")
                maybe_sent |= not isinstance(exc, ConnectionRefusedError)
                continue
            self._current = index
            return answer, maybe_sent
        raise EtcdUnavailableError("etcd unreachable: " + "; ".join(failures), maybe_sent)

    async def call(self, path: str, body: bytes) -> dict[str, Any]:
        """POST ``body`` to ``path`` (``/v3/kv/range``...) and decode the answer."""
        return (await self.call_write(path, body))[0]

    async def call_write(self, path: str, body: bytes) -> tuple[dict[str, Any], bool]:
        """:meth:`call`, and whether an endpoint tried before the one that answered may
        have received (and applied) the request too (protocol.md 10.6)."""
        response: Response
        response, maybe_sent = await self._first_answer(
            lambda endpoint: self._http.request(
                "POST",
                endpoint + path,
                body=body,
                headers={"Content-Type": "application/json"},
                ssl=self.ssl_context,
                timeout=self.timeout,
                max_body=self.max_response,
            )
        )
        if response.status != 200 and not response.body.startswith(b"{"):
            raise EtcdError(f"etcd answered {response.status} to {path}")
        return decode(response.body), maybe_sent

    async def open_watch(self, body: bytes) -> StreamingResponse:
        """Start a watch stream (``POST /v3/watch``); the caller reads and closes it."""
        response: StreamingResponse
        response, _ = await self._first_answer(
            lambda endpoint: self._http.stream(
                "POST",
                endpoint + "/v3/watch",
                body=body,
                headers={"Content-Type": "application/json"},
                ssl=self.ssl_context,
                timeout=self.timeout,
            )
        )
        if response.status != 200:
            text = await _small_body(response)
            raise EtcdError(f"etcd answered {response.status} to a watch: {text!r}")
        return response

    async def close(self) -> None:
        await self._http.close()


async def _small_body(response: StreamingResponse) -> bytes:
    try:
        async with asyncio.timeout(5):
            return await response.read(4096)
    except Exception:  # the body only decorates the error being raised
        return b""
    finally:
        await response.aclose()

"""A small REST client for the Kubernetes-shaped API, shared by client/ and node/.

JSON in, JSON out; a non-2xx answer raises :class:`~hatchway.errors.ApiError` carrying
the server's Status (or one made up from the status line when the body is not a
Status). Watches and log follows are async iterators.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from hatchway.errors import ApiError
from hatchway.protocol import peer_json
from hatchway.protocol.rest_status import (
    Params,
    encode_query,
    status_from_response,
)
from hatchway.transport import httpclient as http  # not the server half: starts faster
from hatchway.transport.bytestream import ByteStream

#: Largest JSON line a watch may send.
MAX_WATCH_LINE = 16 * 1024 * 1024


class RestClient:
    """Talks to one API server with one set of credentials."""

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None,
        token: str | None = None,
        user_agent: str = "hatchway",
        timeout: float = 30.0,
        pool: bool = False,
        connect: http.Connect | None = None,
        server_name: str | None = None,
    ) -> None:
        """``pool``: keep connections alive between requests, and upgrade (exec) on a
        kept-alive one, which saves a TLS handshake per call. Connections belong to the
        event loop that opened them; :meth:`aclose` closes them. ``connect``: how a
        connection is made (:class:`~hatchway.transport.httpclient.HttpClient`'s).
        ``server_name``: the name the server's certificate is checked against and sent
        as SNI, when not the URL's host (kubeconfig ``tls-server-name``)."""
        if server_name and connect is None:
            connect = http.connect_as(server_name)
        self.server = server.rstrip("/")
        self.ssl_context = ssl_context
        self._token = token
        self.user_agent = user_agent
        self.timeout = timeout
        self._pool = pool
        self._connect = connect
        self._http: http.HttpClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"RestClient({self.server!r})"

    def _client(self) -> http.HttpClient:
        """A pooled client for the running loop, or a one-connection-per-call one."""
        if not self._pool:
            return http.HttpClient(pool=False, connect=self._connect)
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            self._http = http.HttpClient(connect=self._connect)
            self._http_loop = loop
        return self._http

    @property
    def connect_seconds(self) -> float:
        """Time the pooled client spent in TCP and TLS handshakes so far."""
        return self._http.connect_seconds if self._http is not None else 0.0

    async def aclose(self) -> None:
        """Close pooled connections (of the running loop's client)."""
        client, self._http = self._http, None
        if client is not None and self._http_loop is asyncio.get_running_loop():
            await client.close()

    def url(self, path: str, params: Params = None) -> str:
        query = encode_query(params)
        return f"{self.server}{path}" + (f"?{query}" if query else "")

    def headers(self, extra: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        headers = [("user-agent", self.user_agent), ("accept", "application/json")]
        if self._token:
            headers.append(("authorization", f"Bearer {self._token}"))
        if extra:
            lowered = {k.lower() for k in extra}
            headers = [h for h in headers if h[0] not in lowered]
            headers.extend((k.lower(), v) for k, v in extra.items())
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        body: Any = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        payload = b""
        extra = dict(headers or {})
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            extra["content-type"] = content_type
        response = await self._client().request(
            method,
            self.url(path, params),
            headers=self.headers(extra),
            body=payload,
            ssl=self.ssl_context,
            timeout=self.timeout,
        )
        if not 200 <= response.status < 300:
            raise ApiError(status_from_response(response.status, response.reason, response.body))
        if not response.body:
            return None
        return peer_json.loads(response.body)

    async def get(self, path: str, params: Params = None) -> Any:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, body=body)

    async def patch(
        self, path: str, body: Any, content_type: str = "application/merge-patch+json"
    ) -> Any:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, params: Params = None, body: Any = None) -> Any:
        return await self.request("DELETE", path, params=params, body=body)

    async def stream(self, path: str, params: Params = None) -> AsyncIterator[bytes]:
        """The raw body of a long-running GET (log follow), chunk by chunk."""
        response = await self._client().stream(
            "GET",
            self.url(path, params),
            headers=self.headers({"accept": "*/*"}),
            ssl=self.ssl_context,
            timeout=self.timeout,
        )
        try:
            if not 200 <= response.status < 300:
                body = b""
                async for chunk in response.iter_body():
                    body += chunk
                    if len(body) > 65536:
                        break
                raise ApiError(status_from_response(response.status, response.reason, body))
            async for chunk in response.iter_body():
                yield chunk
        finally:
            await response.aclose()

    async def watch(self, path: str, params: Params = None) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type": ..., "object": ...}``) one by one."""
        query = dict(params or {})  # type: ignore[arg-type]
        query["watch"] = "true"
        buffer = b""
        async for chunk in self.stream(path, query):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield peer_json.loads(line)
            if len(buffer) > MAX_WATCH_LINE:
                raise ApiError(status_from_response(500, "watch line too long", b""))

    async def upgrade(
        self,
        method: str,
        path: str,
        params: Params,
        headers: Mapping[str, str],
        *,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[http.ClientResponse, ByteStream | None]:
        """An HTTP upgrade (exec/attach): the response and, on 101, the raw stream.
        ``extra_headers`` may repeat a name (one X-Stream-Protocol-Version per line)."""
        return await self._client().upgrade(
            method,
            self.url(path, params),
            headers=[*self.headers(headers), *extra_headers],
            ssl=self.ssl_context,
            timeout=self.timeout,
        )

"""The pooled client's upgrade: on a kept-alive connection (one TLS handshake for a
request and an exec), and retried on a fresh one when the server closed the pooled one
without an answer. Real TLS on loopback, a raw server that counts connections."""

from __future__ import annotations

import asyncio
import os

import pytest

from hatchway import pki
from hatchway.transport import tls
from hatchway.transport.bytestream import ByteStream, Server
from hatchway.transport.httpclient import HttpClient

T = 10 * float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.ensure_pki(tmp_path_factory.mktemp("data"), node_name="node-a")


async def _head(stream: ByteStream, buf: bytes) -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = await stream.read()
        if not chunk:
            return b"", b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _raw_server(connections: list[int], *, drop_second_request_on_first: bool = False):
    async def handler(stream: ByteStream) -> None:
        connections.append(1)
        number = len(connections)
        buf = b""
        while True:
            head, buf = await _head(stream, buf)
            if not head:
                return
            if head.startswith(b"GET /pod "):
                stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            if drop_second_request_on_first and number == 1:
                stream.abort()  # as an idle timeout racing the request would
                return
            stream.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\nHELLO"
            )
            await stream.drain()
            await stream.read()  # until the client closes
            return

    return handler


async def _serve(certs: pki.Pki, handler) -> tuple[Server, str]:  # type: ignore[no-untyped-def]
    server = Server(handler)
    await server.start(
        "127.0.0.1", 0, ssl=tls.server_context(certs.apiserver.cert, certs.apiserver.key)
    )
    return server, f"https://127.0.0.1:{server.port}"


async def _get_then_upgrade(client: HttpClient, url: str, ctx) -> bytes:  # type: ignore[no-untyped-def]
    response = await client.request("GET", url + "/pod", ssl=ctx, timeout=T)
    assert response.status == 200 and response.body == b"ok"
    head, stream = await client.upgrade("GET", url + "/exec", headers=UPGRADE, ssl=ctx, timeout=T)
    assert head.status == 101 and stream is not None
    try:
        async with asyncio.timeout(T):
            return await stream.read()
    finally:
        stream.abort()


async def test_upgrade_reuses_the_kept_alive_connection(certs) -> None:
    connections: list[int] = []
    server, url = await _serve(certs, _raw_server(connections))
    ctx = tls.client_context(ca_file=certs.ca.cert)
    try:
        assert await _get_then_upgrade(HttpClient(), url, ctx) == b"HELLO"
        assert len(connections) == 1
        # Without a pool: a connection per call, as before.
        assert await _get_then_upgrade(HttpClient(pool=False), url, ctx) == b"HELLO"
        assert len(connections) == 3
    finally:
        await server.close()


async def test_upgrade_retries_once_when_the_pooled_connection_was_dropped(certs) -> None:
    connections: list[int] = []
    server, url = await _serve(certs, _raw_server(connections, drop_second_request_on_first=True))
    ctx = tls.client_context(ca_file=certs.ca.cert)
    try:
        assert await _get_then_upgrade(HttpClient(), url, ctx) == b"HELLO"
        assert len(connections) == 2
    finally:
        await server.close()

"""HttpServer against hostile clients over real TLS: the head is checked before the
body is read, an upgrade abandoned by its client is let go exactly once, and
connections are capped per server and per source address."""

from __future__ import annotations

import asyncio
import os

import pytest

from hatchway.transport.bytestream import ByteStream
from hatchway.transport.http import HttpLimits, HttpServer, Request, Response
from hostile import Tls, make_tls

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture
def tls(tmp_path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
async def serve(tls: Tls):
    servers: list[HttpServer] = []

    async def start(app, **kw) -> HttpServer:  # type: ignore[no-untyped-def]
        server = HttpServer(app, **kw)
        await server.start("127.0.0.1", 0, ssl=tls.server)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def connect(server: HttpServer, tls: Tls, *, cert: bool = False) -> ByteStream:
    ctx = tls.client_cert if cert else tls.client
    return await ByteStream.connect("127.0.0.1", server.port, ssl=ctx, server_hostname="127.0.0.1")


async def read_response(stream: ByteStream) -> bytes:
    """One response: its head and Content-Length bytes of body."""
    data = b""
    async with asyncio.timeout(10 * SCALE):
        while b"\r\n\r\n" not in data:
            chunk = await stream.read()
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0])
        while len(body) < length:
            body += await stream.read()
    return head + b"\r\n\r\n" + body


async def read_to_eof(stream: ByteStream) -> bytes:
    data = b""
    async with asyncio.timeout(10 * SCALE):
        while chunk := await stream.read():
            data += chunk
    return data


async def only_with_cert(request: Request) -> Response | None:
    if request.peercert:
        return None
    return Response(401, [("Content-Type", "text/plain")], b"Unauthorized\n")


async def test_a_refused_head_never_has_its_body_read(serve, tls) -> None:
    seen: list[bytes] = []

    async def app(request: Request) -> Response:
        seen.append(request.body)
        return Response(200, [], b"ok")

    server = await serve(app, check_head=only_with_cert)
    body = b"x" * (2 * 1024 * 1024)
    post = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    anonymous = await connect(server, tls)
    anonymous.write(post + body[:1000])  # the rest of the body never comes
    answer = await read_to_eof(anonymous)  # answered and closed at once
    assert answer.startswith(b"HTTP/1.1 401 ") and b"connection: close" in answer.lower()
    assert answer.endswith(b"Unauthorized\n")
    assert seen == []
    user = await connect(server, tls, cert=True)
    user.write(post + body)
    assert (await read_response(user)).startswith(b"HTTP/1.1 200 ")
    assert seen == [body]
    user.abort()


async def test_a_refused_head_without_a_body_keeps_the_connection(serve, tls) -> None:
    async def app(request: Request) -> Response:
        return Response(200, [], b"ok")

    server = await serve(app, check_head=only_with_cert)
    stream = await connect(server, tls)
    for _ in range(2):
        stream.write(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await read_response(stream)
        assert answer.startswith(b"HTTP/1.1 401 ") and b"connection: close" not in answer.lower()
    stream.abort()


async def test_an_upgrade_whose_client_left_is_abandoned_once(serve, tls) -> None:
    client_gone = asyncio.Event()
    abandoned: list[str] = []
    upgraded: list[str] = []

    async def run(stream: ByteStream) -> None:
        upgraded.append("run")

    async def app(request: Request) -> Response:
        await client_gone.wait()  # e.g. dialling a slow node
        await asyncio.sleep(0.1)  # the server has seen the close
        headers = [("Connection", "Upgrade"), ("Upgrade", "x")]
        return Response(101, headers, upgrade=run, abandon=lambda: abandoned.append("x"))

    server = await serve(app)
    stream = await connect(server, tls)
    stream.write(b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
    await stream.drain()
    await asyncio.sleep(0.1)
    stream.abort()
    client_gone.set()
    async with asyncio.timeout(10 * SCALE):
        while not abandoned:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    assert abandoned == ["x"] and upgraded == []
    # A client that stays gets its upgrade, and nothing is abandoned.
    stream = await connect(server, tls)
    stream.write(b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
    assert (await read_to_eof(stream)).startswith(b"HTTP/1.1 101 ")
    assert abandoned == ["x"] and upgraded == ["run"]


async def _hello(request: Request) -> Response:
    return Response(200, [], b"hello")


async def test_connections_per_source_are_capped(serve, tls) -> None:
    server = await serve(_hello, limits=HttpLimits(max_connections_per_source=3))
    held = [await connect(server, tls) for _ in range(3)]
    for stream in held:
        stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(stream)).endswith(b"hello")  # kept alive, counted
    assert server.by_source == {"127.0.0.1": 3}
    extra = await connect(server, tls)
    extra.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await read_to_eof(extra)
    assert answer.startswith(b"HTTP/1.1 429 ") and b"retry-after: 1" in answer.lower()
    assert answer.endswith(b"\r\n\r\nToo many requests, please try again later.\n")
    held.pop().abort()
    async with asyncio.timeout(10 * SCALE):
        while server.by_source["127.0.0.1"] > 2:
            await asyncio.sleep(0.01)
    again = await connect(server, tls)
    again.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(again)).endswith(b"hello")
    for stream in (*held, again):
        stream.abort()


async def test_connections_per_server_are_capped(serve, tls) -> None:
    server = await serve(_hello, limits=HttpLimits(max_connections=2))
    held = [await connect(server, tls) for _ in range(2)]
    for stream in held:
        stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_response(stream)
    extra = await connect(server, tls)
    extra.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await read_to_eof(extra)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower()
    assert answer.endswith(b"Too many connections, please try again later.\n")
    assert server.connections == 2
    for stream in held:
        stream.abort()

"""The HTTP/1.1 layer over real TLS on loopback, with certificates from hatchway.pki."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hatchway import pki
from hatchway.errors import ConnectionClosedError
from hatchway.transport import tls
from hatchway.transport.bytestream import ByteStream, Server
from hatchway.transport.http import (
    HeaderInjectionError,
    HttpClient,
    HttpLimits,
    HttpServer,
    Request,
    Response,
    request,
    upgrade,
)

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
T = 10 * SCALE

App = Callable[[Request], Awaitable[Response]]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.ensure_pki(tmp_path_factory.mktemp("data"), node_name="node-a")


@pytest.fixture
def client_ctx(certs: pki.Pki):
    return tls.client_context(ca_file=certs.ca.cert)


@pytest.fixture
async def serve(certs: pki.Pki):
    servers: list[HttpServer] = []

    async def start(app: App, limits: HttpLimits | None = None) -> str:
        server = HttpServer(app, limits=limits or HttpLimits())
        ctx = tls.server_context(certs.apiserver.cert, certs.apiserver.key)
        await server.start("127.0.0.1", 0, ssl=ctx)
        servers.append(server)
        return f"https://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.close()


async def raw_exchange(url: str, ctx, data: bytes, *, read_until_eof: bool = True) -> bytes:
    """Write ``data`` in one write on a fresh TLS connection; everything read until EOF."""
    port = int(url.rsplit(":", 1)[1])
    stream = await ByteStream.connect("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    try:
        stream.write(data)
        out = b""
        async with asyncio.timeout(T):
            while chunk := await stream.read():
                out += chunk
        return out
    finally:
        stream.abort()


# -- requests and responses ------------------------------------------------------------------
async def test_round_trip_keep_alive(serve, client_ctx) -> None:
    seen: list[Request] = []

    async def app(req: Request) -> Response:
        seen.append(req)
        return Response(200, [("Content-Type", "text/plain")], b"hello " + req.body)

    url = await serve(app)
    async with HttpClient() as client:
        first = await client.request(
            "POST", url + "/a%20b/c?x=1&x=2&empty=&y=a+b", body=b"one", ssl=client_ctx
        )
        second = await client.request("GET", url + "/again", ssl=client_ctx)
    assert (first.status, first.reason, first.body) == (200, "OK", b"hello one")
    assert first.header("content-type") == "text/plain"
    assert second.body == b"hello "
    assert len(seen) == 2
    assert seen[0].peer == seen[1].peer, "both requests must share one connection"
    req = seen[0]
    assert (req.method, req.path, req.raw_path) == ("POST", "/a b/c", "/a%20b/c")
    assert req.query == {"x": ["1", "2"], "empty": [""], "y": ["a b"]}
    assert req.header("HOST") == f"127.0.0.1:{url.rsplit(':', 1)[1]}"
    assert req.peercert is None
    assert not req.is_upgrade


async def test_module_request_uses_its_own_connection(serve, client_ctx) -> None:
    peers = []

    async def app(req: Request) -> Response:
        peers.append(req.peer)
        return Response(204)

    url = await serve(app)
    for _ in range(2):
        resp = await request("GET", url + "/", ssl=client_ctx, timeout=T)
        assert resp.status == 204 and resp.body == b""
    assert peers[0] != peers[1]


async def test_chunked_streaming_body(serve, client_ctx) -> None:
    release = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b'{"type":"ADDED"}\n'
        await release.wait()  # the first chunk must reach the client before this
        yield b'{"type":"MODIFIED"}\n'

    async def app(req: Request) -> Response:
        return Response(200, [("Content-Type", "application/json")], body_iter=events())

    url = await serve(app)
    async with HttpClient() as client:
        resp = await client.stream("GET", url + "/watch", ssl=client_ctx)
        assert resp.header("transfer-encoding") == "chunked"
        chunks = []
        async with asyncio.timeout(T):
            async for chunk in resp:
                chunks.append(chunk)
                release.set()
        assert b"".join(chunks) == b'{"type":"ADDED"}\n{"type":"MODIFIED"}\n'
        again = await client.request("GET", url + "/x", ssl=client_ctx)
        assert again.status == 200


async def test_streaming_iterator_closed_when_client_leaves(serve, client_ctx) -> None:
    closed = asyncio.Event()

    async def forever() -> AsyncIterator[bytes]:
        try:
            yield b"first\n"
            await asyncio.sleep(3600)
            yield b"never\n"
        finally:
            closed.set()

    async def app(req: Request) -> Response:
        return Response(200, body_iter=forever())

    url = await serve(app)
    async with HttpClient() as client, await client.stream("GET", url, ssl=client_ctx) as resp:
        async for chunk in resp:
            assert chunk == b"first\n"
            break
    async with asyncio.timeout(T):
        await closed.wait()


# -- upgrades -------------------------------------------------------------------------------
UPGRADE_HEAD = (
    b"POST /exec?command=cat HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
    b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
)


def echo_app(bodies: list[bytes]) -> App:
    async def echo(stream: ByteStream) -> None:
        stream.write(b"SERVER-FIRST|")
        while data := await stream.read():
            stream.write(data)
            await stream.drain()
            if data.endswith(b"END"):
                return

    async def app(req: Request) -> Response:
        bodies.append(req.body)
        assert req.is_upgrade
        headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
        headers.append(("X-Stream-Protocol-Version", "v4.channel.k8s.io"))
        return Response(101, headers, upgrade=echo)

    return app


async def test_upgrade_keeps_bytes_sent_with_the_request(serve, client_ctx) -> None:
    bodies: list[bytes] = []
    url = await serve(echo_app(bodies))
    # Body "abcde" then the first bytes of the next protocol, all in one write: the server
    # must stop at Content-Length and hand the rest to the upgrade callable.
    out = await raw_exchange(url, client_ctx, UPGRADE_HEAD + b"abcde" + b"EARLY-FRAME|END")
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nX-Stream-Protocol-Version: v4.channel.k8s.io" in head
    assert b"Content-Length" not in head and b"Date" not in head
    assert rest == b"SERVER-FIRST|EARLY-FRAME|END"
    assert bodies == [b"abcde"]


async def test_client_upgrade_echo(serve, client_ctx) -> None:
    url = await serve(echo_app([]))
    headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
    resp, stream = await upgrade(
        "POST", url + "/exec", headers=headers, ssl=client_ctx, timeout=T, early_data=b"EARLY|"
    )
    assert resp.status == 101 and stream is not None
    assert resp.header("x-stream-protocol-version") == "v4.channel.k8s.io"
    try:
        stream.write(b"ping|END")
        got = b""
        async with asyncio.timeout(T):
            while not got.endswith(b"END"):
                got += await stream.read()
        assert got == b"SERVER-FIRST|EARLY|ping|END"
    finally:
        stream.abort()


async def test_client_gets_bytes_written_with_the_101(certs, client_ctx) -> None:
    """A server that writes the 101 head and its first frame in one write."""

    async def handler(stream: ByteStream) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await stream.read()
        stream.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\nFRAME-1 FRAME-2"
        )
        await stream.drain()
        await stream.read()  # until the client closes

    server = Server(handler)
    ctx = tls.server_context(certs.apiserver.cert, certs.apiserver.key)
    await server.start("127.0.0.1", 0, ssl=ctx)
    try:
        resp, stream = await upgrade(
            "GET",
            f"https://127.0.0.1:{server.port}/ws",
            headers={"Connection": "Upgrade", "Upgrade": "websocket"},
            ssl=client_ctx,
            timeout=T,
        )
        assert resp.status == 101 and stream is not None
        got = b""
        async with asyncio.timeout(T):
            while len(got) < 15:
                got += await stream.read()
        assert got == b"FRAME-1 FRAME-2"
        stream.abort()
    finally:
        await server.close()


async def test_refused_upgrade_returns_body_and_closes(serve, client_ctx) -> None:
    calls: list[str] = []

    async def app(req: Request) -> Response:
        calls.append(req.raw_path)
        return Response(403, [("Content-Type", "text/plain")], b"unable to upgrade: no\n")

    url = await serve(app)
    headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    resp, stream = await upgrade("POST", url + "/exec", headers=headers, ssl=client_ctx)
    assert (resp.status, resp.body, stream) == (403, b"unable to upgrade: no\n", None)
    assert resp.header("connection") == "close"
    # Bytes after a refused upgrade are never parsed as another request (CVE-2018-1002105).
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    out = await raw_exchange(url, client_ctx, UPGRADE_HEAD + b"abcde" + smuggled)
    assert out.startswith(b"HTTP/1.1 403 ") and out.count(b"HTTP/1.1") == 1
    assert calls == ["/exec", "/exec"]


async def test_101_without_upgrade_proposal_is_a_500(serve, client_ctx) -> None:
    async def app(req: Request) -> Response:
        async def never(stream: ByteStream) -> None:
            raise AssertionError("must not be called")

        return Response(101, [("Upgrade", "x")], upgrade=never)

    url = await serve(app)
    resp = await request("GET", url + "/", ssl=client_ctx, timeout=T)
    assert resp.status == 500


async def test_redirects_are_not_followed(serve, client_ctx) -> None:
    calls: list[str] = []

    async def app(req: Request) -> Response:
        calls.append(req.path)
        return Response(302, [("Location", "/elsewhere")], b"")

    url = await serve(app)
    resp = await request("GET", url + "/here", ssl=client_ctx, timeout=T)
    assert (resp.status, resp.header("location")) == (302, "/elsewhere")
    headers = {"Connection": "Upgrade", "Upgrade": "websocket"}
    uresp, stream = await upgrade("GET", url + "/here", headers=headers, ssl=client_ctx)
    assert uresp.status == 302 and stream is None
    assert calls == ["/here", "/here"]


# -- failures and limits ----------------------------------------------------------------------
async def test_app_exception_is_500_and_server_keeps_serving(serve, client_ctx) -> None:
    async def app(req: Request) -> Response:
        if req.path == "/boom":
            raise RuntimeError("boom")
        return Response(200, body=b"fine")

    url = await serve(app)
    async with HttpClient() as client:
        bad = await client.request("GET", url + "/boom", ssl=client_ctx)
        good = await client.request("GET", url + "/ok", ssl=client_ctx)
    assert (bad.status, good.status, good.body) == (500, 200, b"fine")
    assert b"boom" not in bad.body


async def ok_app(req: Request) -> Response:
    return Response(200, body=b"ok")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 200 + b"\r\n", 431),
        # an exec query of ~8,000 arguments: the head limit bounds argv (exec_options)
        (b"GET /?" + b"command=x&" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (b"\x16\x03garbage line\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 100, 413),
    ],
    ids=["big-head", "many-headers", "big-request-line", "garbage", "big-content-length"],
)
async def test_limits(serve, client_ctx, data: bytes, status: int) -> None:
    url = await serve(ok_app)
    out = await raw_exchange(url, client_ctx, data)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:80]


async def test_chunked_body_over_limit_is_413(serve, client_ctx) -> None:
    url = await serve(ok_app, HttpLimits(max_body=1000))
    chunk = b"400\r\n" + b"y" * 1024 + b"\r\n"
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2
    out = await raw_exchange(url, client_ctx, data + b"0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ")


async def test_big_body_sent_whole_still_gets_413(serve, client_ctx) -> None:
    url = await serve(ok_app)
    body = b"z" * (4 * 1024 * 1024)
    resp = await request("PUT", url + "/", body=body, ssl=client_ctx, timeout=T)
    assert resp.status == 413


async def test_slowloris_head_times_out(serve, client_ctx) -> None:
    url = await serve(ok_app, HttpLimits(head_timeout=0.5 * SCALE))
    port = int(url.rsplit(":", 1)[1])
    stream = await ByteStream.connect(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = b""
    try:
        stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        async with asyncio.timeout(T):
            while True:
                stream.write(b"X-Slow: 1\r\n")  # a header a while, never finishing
                await asyncio.sleep(0.1)
                if stream.buffered or stream.at_eof:
                    break
        while chunk := await stream.read():
            out += chunk
    except (ConnectionClosedError, ConnectionError):
        pass
    finally:
        stream.abort()
    assert loop.time() - started < 5 * SCALE
    assert out.startswith(b"HTTP/1.1 408 ")


async def test_idle_keep_alive_connection_is_closed(serve, client_ctx) -> None:
    url = await serve(ok_app, HttpLimits(idle_timeout=0.3 * SCALE))
    request_bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    out = await raw_exchange(url, client_ctx, request_bytes)  # returns at EOF
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"ok")


async def test_header_injection_refused(serve, client_ctx) -> None:
    async def app(req: Request) -> Response:
        return Response(200, [("X-Echo", "a\r\nSet-Cookie: evil=1")])

    url = await serve(app)
    with pytest.raises(HeaderInjectionError):
        await request("GET", url + "/", headers={"X-A": "1\r\nX-Evil: 1"}, ssl=client_ctx)
    with pytest.raises(HeaderInjectionError):
        await request("GET", url + "/", headers={"Bad Name": "1"}, ssl=client_ctx)
    with pytest.raises(HeaderInjectionError):
        await request("GET", url + "/a\r\nX-Evil: 1", ssl=client_ctx)
    resp = await request("GET", url + "/", ssl=client_ctx, timeout=T)
    assert resp.status == 500 and resp.header("set-cookie") is None


async def test_ipv6_url_parsing() -> None:
    from hatchway.transport.http import parse_url

    origin = parse_url("https://[::1]:6443/api/v1?watch=1")
    assert (origin.host, origin.port, origin.target) == ("::1", 6443, "/api/v1?watch=1")
    assert origin.host_header == "[::1]:6443"
    assert parse_url("http://example.com/").host_header == "example.com"


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_loopback_round_trip(certs, client_ctx) -> None:
    async def app(req: Request) -> Response:
        return Response(200, body=req.header("host").encode())

    server = HttpServer(app)
    await server.start("::1", 0, ssl=tls.server_context(certs.apiserver.cert, certs.apiserver.key))
    try:
        resp = await request("GET", f"https://[::1]:{server.port}/", ssl=client_ctx, timeout=T)
        assert resp.body == f"[::1]:{server.port}".encode()
    finally:
        await server.close()


async def test_module_stream_read_and_iter_body(serve, client_ctx) -> None:
    from hatchway.transport.http import stream, stream_request

    async def app(req: Request) -> Response:
        if req.path == "/missing":
            return Response(404, [("Content-Type", "text/plain")], b"no such thing")

        async def lines() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"line {i}\n".encode()

        return Response(200, body_iter=lines())

    url = await serve(app)
    missing = await stream("GET", url + "/missing", ssl=client_ctx, timeout=T)
    assert missing.status == 404
    assert await missing.read(1024) == b"no such thing"
    async with await stream_request("GET", url + "/logs", ssl=client_ctx, timeout=T) as resp:
        body = b"".join([chunk async for chunk in resp.iter_body()])
    assert body == b"line 0\nline 1\nline 2\n"


def test_limits_scaled_multiplies_timeouts_only() -> None:
    limits = HttpLimits(head_timeout=2.0, max_body=10).scaled(3)
    assert limits.head_timeout == 6.0 and limits.body_timeout == 3 * HttpLimits.body_timeout
    assert limits.idle_timeout == 3 * HttpLimits.idle_timeout
    assert limits.linger == 3 * HttpLimits.linger
    assert limits.linger_quiet == 3 * HttpLimits.linger_quiet
    assert limits.stream_idle_timeout == 3 * HttpLimits.stream_idle_timeout
    assert limits.max_body == 10 and limits.max_connections == HttpLimits.max_connections


async def test_scaled_head_timeout_is_what_the_server_applies(
    serve, client_ctx, monkeypatch
) -> None:
    """The server's timeout comes from its limits alone: a test variable in the
    environment no longer stretches it."""
    monkeypatch.setenv("HATCHWAY_TEST_TIMEOUT_SCALE", "1000")
    url = await serve(ok_app, HttpLimits(head_timeout=0.1).scaled(2 * SCALE))
    port = int(url.rsplit(":", 1)[1])
    stream = await ByteStream.connect(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
    )
    out = b""
    try:
        stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        async with asyncio.timeout(T):
            while chunk := await stream.read():
                out += chunk
    except (ConnectionClosedError, ConnectionError):
        pass
    finally:
        stream.abort()
    assert out.startswith(b"HTTP/1.1 408 ")

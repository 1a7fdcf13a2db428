"""Closing never cuts a peer that is still reading (issue 10, item 1): ByteStream's close,
the WebSocket closing handshake and SPDY's wait for the client to hang up, each over
real loopback TLS, under asyncio and uvloop.

A writer queues more than the reader can take in the old fixed 5-second grace, then
closes; the reader takes it slowly (small SO_RCVBUF and receive bound, so the tail stays
on the writer's side) and must get every byte and a clean end. A reader that takes
nothing for the drain idle timeout is cut, and the writer says so."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hatchway import pki
from hatchway.transport import drain
from hatchway.transport.bytestream import ByteStream, Server
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
T = 40 * SCALE
KIB = 1024
MIB = 1024 * KIB
LOOPS = ["asyncio", "uvloop"]
#: Old code gave a closing peer 5 s; these drains take about 7 s.
SIZE = 3 * MIB + 512 * KIB
RATE = 512 * KIB


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    ca = pki.create_ca(directory)
    pki.issue_certificate(
        ca, directory / "srv", common_name="localhost", ip_addresses=["127.0.0.1"], server=True
    )
    return directory


def run(loop: str, coro: Awaitable[Any]) -> Any:
    if loop == "uvloop":
        return pytest.importorskip("uvloop").run(coro)
    return asyncio.run(coro)  # type: ignore[arg-type]


def data(size: int) -> bytes:
    """Reproducible, not all zeros."""
    return (hashlib.sha256(b"drain").digest() * (size // 32 + 1))[:size]


async def pair(
    certs: Path, handler: Callable[[ByteStream], Awaitable[None]]
) -> tuple[Server, ByteStream]:
    """A TLS server running ``handler`` (the writer) and a connected, slow-to-buffer
    client (the reader): 32 KiB socket receive buffer, 64 KiB receive bound."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / "srv.crt", certs / "srv.key")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(certs / "ca.crt")
    server = Server(handler)
    await server.start("127.0.0.1", 0, ssl=server_ctx)
    reader = await ByteStream.connect("127.0.0.1", server.port, ssl=client_ctx)
    reader.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KIB)
    reader.set_recv_limit(64 * KIB)
    return server, reader


async def paced(
    read: Callable[[], Awaitable[bytes]], rate: float, limit: int | None = None
) -> bytes:
    """Read to EOF (or ``limit`` bytes) at about ``rate`` bytes per second."""
    parts: list[bytes] = []
    got, start = 0, time.monotonic()
    while limit is None or got < limit:
        ahead = got / rate - (time.monotonic() - start)
        if ahead > 0:
            await asyncio.sleep(ahead)
        chunk = await read()
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# -- ByteStream.close ------------------------------------------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_close_waits_for_a_slow_reader(loop: str, certs: Path) -> None:
    """Everything queued before close() arrives though it takes longer than the old 5 s."""
    payload = data(SIZE)

    async def main() -> None:
        closed: asyncio.Future[tuple[bool, float]] = asyncio.get_running_loop().create_future()

        async def writer(stream: ByteStream) -> None:
            stream.write(payload)  # all of it queued at once: nothing waits on drain()
            started = time.monotonic()
            closed.set_result((await stream.aclose(), time.monotonic() - started))

        server, reader = await pair(certs, writer)
        try:
            async with asyncio.timeout(T):
                got = await paced(reader.read, RATE)
                delivered, took = await closed
        finally:
            await server.close()
        assert len(got) == SIZE and got == payload
        assert delivered
        assert took > 5  # the old grace would have cut it

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_progress_keeps_a_close_open_past_the_idle_timeout(loop: str, certs: Path) -> None:
    """The idle timeout counts from the peer's last progress, not from close()."""
    # ~4 s of paced reading per unit of SCALE: several idle timeouts, however scaled
    payload = data(int(2 * MIB * max(SCALE, 1.0)))

    async def main() -> None:
        result: asyncio.Future[tuple[bool, float, bool]] = (
            asyncio.get_running_loop().create_future()
        )

        async def writer(stream: ByteStream) -> None:
            stream.write(payload)
            started = time.monotonic()
            ok = await stream.aclose(idle_timeout=1.0 * SCALE)
            result.set_result((ok, time.monotonic() - started, stream.cut))

        server, reader = await pair(certs, writer)
        try:
            async with asyncio.timeout(T):
                got = await paced(reader.read, RATE)
                delivered, took, cut = await result
        finally:
            await server.close()
        assert got == payload
        assert (delivered, cut) == (True, False)
        assert took > 2 * SCALE  # several idle timeouts long, never idle for one

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_takes_nothing_is_cut_after_the_idle_timeout(
    loop: str, certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payload = data(4 * MIB)
    idle = 1.0 * SCALE

    async def main() -> None:
        result: asyncio.Future[tuple[bool, float, bool]] = (
            asyncio.get_running_loop().create_future()
        )

        async def writer(stream: ByteStream) -> None:
            stream.write(payload)
            started = time.monotonic()
            ok = await stream.aclose(idle_timeout=idle)
            result.set_result((ok, time.monotonic() - started, stream.cut))

        server, reader = await pair(certs, writer)
        try:
            async with asyncio.timeout(T):
                first = await reader.read()  # then nothing
                delivered, took, cut = await result
        finally:
            reader.abort()
            await server.close()
        assert first
        assert (delivered, cut) == (False, True)
        assert idle <= took < idle + 5 * SCALE

    run(loop, main())
    assert "connection cut" in caplog.text


# -- WebSocket: the closing handshake --------------------------------------------------------
async def ws_pair(
    certs: Path, server_side: Callable[[WebSocketConnection], Awaitable[None]]
) -> tuple[Server, WebSocketConnection]:
    async def handler(stream: ByteStream) -> None:
        async with WebSocketConnection(stream, client=False, protocol="v5.channel.k8s.io") as c:
            await server_side(c)

    server, reader = await pair(certs, handler)
    client = WebSocketConnection(reader, client=True, protocol="v5.channel.k8s.io")
    client.start()
    return server, client


@pytest.mark.parametrize("loop", LOOPS)
def test_websocket_close_waits_for_a_slow_reader(loop: str, certs: Path) -> None:
    payload = data(SIZE)

    async def main() -> None:
        result: asyncio.Future[tuple[bool, float]] = asyncio.get_running_loop().create_future()

        async def server_side(conn: WebSocketConnection) -> None:
            out = conn.channel(1)
            for off in range(0, SIZE, 256 * KIB):
                await out.write(payload[off : off + 256 * KIB])
            started = time.monotonic()
            await conn.close()
            result.set_result((conn.cut, time.monotonic() - started))

        server, client = await ws_pair(certs, server_side)
        try:
            async with asyncio.timeout(T):
                got = await paced(client.channel(1).read, RATE)
                cut, took = await result
                await client.close()
        finally:
            await server.close()
        assert got == payload
        assert client.close_code == 1000
        assert not cut
        assert took > 3  # the server waited for the close reply behind the slow tail

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_websocket_close_cuts_a_reader_that_takes_nothing(loop: str, certs: Path) -> None:
    payload = data(16 * MIB)  # more than every buffer on the way holds

    async def main() -> None:
        result: asyncio.Future[tuple[bool, float]] = asyncio.get_running_loop().create_future()

        async def server_side(conn: WebSocketConnection) -> None:
            conn._stream.drain_idle_timeout = 1.0 * SCALE
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * SCALE):  # blocked: the reader takes nothing
                    await conn.channel(1).write(payload)
            started = time.monotonic()
            await conn.close()
            result.set_result((conn.cut, time.monotonic() - started))

        server, client = await ws_pair(certs, server_side)
        try:
            async with asyncio.timeout(T):
                cut, took = await result
        finally:
            client.abort()
            await server.close()
        assert cut
        assert took < 5 * SCALE

    run(loop, main())


# -- SPDY: waiting for the client to hang up -------------------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_spdy_wait_hang_up_lasts_while_the_client_reads(loop: str, certs: Path) -> None:
    payload = data(SIZE)

    async def main() -> None:
        result: asyncio.Future[tuple[bool, float]] = asyncio.get_running_loop().create_future()

        async def handler(stream: ByteStream) -> None:
            async with SpdyConnection(stream, client=False, protocol="v4.channel.k8s.io") as conn:
                out = await conn.accept_stream()
                await out.write(payload)
                await out.write_eof()
                started = time.monotonic()
                ok = await conn.wait_hang_up()
                result.set_result((ok, time.monotonic() - started))

        server, reader = await pair(certs, handler)
        client = SpdyConnection(reader, client=True, protocol="v4.channel.k8s.io")
        client.start()
        try:
            async with asyncio.timeout(T):
                stream = await client.open_stream({"streamtype": "stdout"})
                got = await paced(stream.read, RATE)
                await client.close()
                ok, took = await result
        finally:
            await server.close()
        assert got == payload
        assert ok
        assert took > 3

    run(loop, main())


# -- drain.wait_or_cut: the closing waits both drivers share ---------------------------------
class _Sender:
    """A peer that takes nothing: acknowledgements unknown, our buffer never shrinks."""

    bytes_acked = None
    write_buffered = 1000

    def __init__(self, unsent: int) -> None:
        self.unsent = unsent
        self.drain_idle_timeout = 0.05
        self.cut_after: float | None = None

    def give_up(self, stalled: float) -> None:
        self.cut_after = stalled


async def test_wait_or_cut_cuts_a_stalled_peer_with_output_unsent() -> None:
    sender = _Sender(unsent=1000)
    never = asyncio.get_running_loop().create_future()
    assert await drain.wait_or_cut(sender, never) == "cut"
    assert sender.cut_after == sender.drain_idle_timeout
    assert never.cancelled()


async def test_wait_or_cut_does_not_cut_a_peer_that_has_it_all() -> None:
    """Idle, but everything was acknowledged: nothing may have been lost, so no cut (and
    no false "cut" in the outcome), with or without a settle time."""
    for settle in (None, 10.0):
        sender = _Sender(unsent=0)
        never = asyncio.get_running_loop().create_future()
        assert await drain.wait_or_cut(sender, never, settle) == "delivered"
        assert sender.cut_after is None


async def test_wait_or_cut_returns_done_when_the_awaitable_finishes() -> None:
    sender = _Sender(unsent=1000)
    sender.drain_idle_timeout = 60.0
    assert await drain.wait_or_cut(sender, asyncio.sleep(0)) == "done"
    assert sender.cut_after is None

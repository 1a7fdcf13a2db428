"""ByteStream and Splice over real loopback sockets, plain and TLS, under asyncio and
uvloop: bytes checked by hash both ways at once, half-close, abrupt close of either side,
and backpressure (a reader that stops keeps the splice's buffers bounded)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hatchway import pki
from hatchway.transport import bytestream
from hatchway.transport.bytestream import ByteStream, Server, Splice

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
T = 20 * SCALE
MIB = 1024 * 1024
#: What a spliced connection may hold: its high watermark, plus the one read that crossed
#: it, plus TLS framing (about 1/500).
BOUND = bytestream.SPLICE_SEND_HIGH + bytestream.READ_CHUNK + 16 * 1024


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    ca = pki.create_ca(directory)
    pki.issue_certificate(
        ca, directory / "srv", common_name="localhost", ip_addresses=["127.0.0.1"], server=True
    )
    return directory


def contexts(certs: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs / "srv.crt", certs / "srv.key")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(certs / "ca.crt")
    return server, client


def run(loop: str, coro: Awaitable[Any]) -> Any:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(coro)
    return asyncio.run(coro)  # type: ignore[arg-type]


@dataclass
class Joined:
    """end_a <-> [a | Splice | b] <-> end_b: four ByteStreams, one Splice."""

    end_a: ByteStream
    end_b: ByteStream
    splice: Splice
    a: ByteStream
    b: ByteStream


async def accept_one(ctx: ssl.SSLContext | None) -> tuple[Server, asyncio.Future[ByteStream]]:
    got: asyncio.Future[ByteStream] = asyncio.get_running_loop().create_future()

    async def handler(stream: ByteStream) -> None:
        got.set_result(stream)
        await stream.wait_closed()

    server = Server(handler)
    await server.start("127.0.0.1", 0, ssl=ctx)
    return server, got


async def with_splice(tls: bool, certs: Path, body: Callable[[Joined], Awaitable[None]]) -> None:
    server_ctx, client_ctx = contexts(certs) if tls else (None, None)
    front, front_got = await accept_one(server_ctx)
    back, back_got = await accept_one(server_ctx)
    try:
        async with asyncio.timeout(T):
            end_a = await ByteStream.connect("127.0.0.1", front.port, ssl=client_ctx)
            a = await front_got
            b = await ByteStream.connect("127.0.0.1", back.port, ssl=client_ctx)
            end_b = await back_got
        splice = Splice(a, b)
        splice.start()
        await body(Joined(end_a, end_b, splice, a, b))
    finally:
        await front.close()
        await back.close()


def block(seed: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)


async def send(stream: ByteStream, total: int, seed: int) -> str:
    digest = hashlib.sha256()
    data, sent = memoryview(block(seed)), 0
    while sent < total:
        piece = data[: min(total - sent, 64 * 1024 + sent % 4099)]  # ragged writes
        stream.write(piece)
        digest.update(piece)
        sent += len(piece)
        await stream.drain()
    return digest.hexdigest()


async def receive(stream: ByteStream, total: int | None = None) -> tuple[str, int]:
    """Read until ``total`` bytes or EOF: (sha256, count)."""
    digest, count = hashlib.sha256(), 0
    while total is None or count < total:
        data = await stream.read()
        if not data:
            break
        digest.update(data)
        count += len(data)
    return digest.hexdigest(), count


LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "tcp"])
@pytest.mark.parametrize("loop", LOOPS)
def test_both_ways_at_once_every_byte(loop: str, tls: bool, certs: Path) -> None:
    size = 48 * MIB + 12345

    async def body(j: Joined) -> None:
        async with asyncio.timeout(6 * T):
            results = await asyncio.gather(
                send(j.end_a, size, 1), receive(j.end_b, size), send(j.end_b, size, 2),
                receive(j.end_a, size),
            )  # fmt: skip
        sent_ab, (got_ab, n_ab), sent_ba, (got_ba, n_ba) = results
        assert (n_ab, n_ba) == (size, size)
        assert got_ab == sent_ab and got_ba == sent_ba
        assert j.splice.sent == [size, size]
        assert not j.splice.ended.done()

    run(loop, with_splice(tls, certs, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_big_read_goes_to_a_tls_side_in_pieces(loop: str, certs: Path) -> None:
    """What one read delivers reaches a TLS transport in SPLICE_TLS_WRITE pieces (their
    ciphertext stays below the API server's fixed mmap threshold), every byte in order."""
    size = 3 * bytestream.SPLICE_TLS_WRITE + 777

    async def body(j: Joined) -> None:
        writes: list[int] = []
        original = j.splice._write

        def recording(side: int, data: Any) -> None:
            writes.append(len(data))
            original(side, data)

        j.splice._write = recording  # type: ignore[method-assign]
        data = block(7)[:size]
        bytestream._shared.view[:size] = data  # as if one read had delivered it
        j.splice.forward(0, size)
        async with asyncio.timeout(T):
            got = await j.end_b.readexactly(size)
        assert got == data
        assert writes == [bytestream.SPLICE_TLS_WRITE] * 3 + [777]

    run(loop, with_splice(True, certs, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_buffered_before_the_splice_go_first(loop: str, certs: Path) -> None:
    async def main() -> None:
        server_ctx, client_ctx = contexts(certs)
        front, front_got = await accept_one(server_ctx)
        back, back_got = await accept_one(server_ctx)
        try:
            end_a = await ByteStream.connect("127.0.0.1", front.port, ssl=client_ctx)
            a = await front_got
            b = await ByteStream.connect("127.0.0.1", back.port, ssl=client_ctx)
            end_b = await back_got
            end_a.write(b"early bytes|")
            await asyncio.sleep(0.2)  # they arrive in a's buffer
            a.unread(b"head rest|")
            Splice(a, b).start()
            end_a.write(b"late")
            async with asyncio.timeout(T):
                assert await end_b.readexactly(26) == b"head rest|early bytes|late"
        finally:
            await front.close()
            await back.close()

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_half_close_passes_on_over_tcp(loop: str, certs: Path) -> None:
    async def body(j: Joined) -> None:
        async with asyncio.timeout(T):
            j.end_a.write(b"request")
            j.end_a.write_eof()
            assert await receive(j.end_b) == (hashlib.sha256(b"request").hexdigest(), 7)
            assert not j.splice.ended.done()  # the other direction still runs
            j.end_b.write(b"answer after EOF")
            assert await j.end_a.readexactly(16) == b"answer after EOF"
            j.end_b.write_eof()
            assert await j.end_a.read() == b""
            assert await j.splice.ended == 1  # the second EOF ends it

    run(loop, with_splice(False, certs, body))


@pytest.mark.parametrize("side", [0, 1], ids=["a-closes", "b-closes"])
@pytest.mark.parametrize("loop", LOOPS)
def test_tls_close_ends_the_splice(loop: str, side: int, certs: Path) -> None:
    async def body(j: Joined) -> None:
        ends = (j.end_a, j.end_b)
        async with asyncio.timeout(T):
            ends[side].write(b"last words")
            ends[side].close()
            assert await j.splice.ended == side
            await asyncio.gather(j.a.aclose(), j.b.aclose())
            assert await ends[1 - side].readexactly(10) == b"last words"
            assert await ends[1 - side].read() == b""

    run(loop, with_splice(True, certs, body))


@pytest.mark.parametrize("side", [0, 1], ids=["a-aborts", "b-aborts"])
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "tcp"])
@pytest.mark.parametrize("loop", LOOPS)
def test_abrupt_close_ends_the_splice(loop: str, tls: bool, side: int, certs: Path) -> None:
    async def body(j: Joined) -> None:
        ends = (j.end_a, j.end_b)
        sock = ends[side].get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        async with asyncio.timeout(T):
            ends[side].abort()
            assert await j.splice.ended == side
            await asyncio.gather(j.a.aclose(), j.b.aclose())
            assert await ends[1 - side].read() == b""

    run(loop, with_splice(tls, certs, body))


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "tcp"])
@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_stops_keeps_the_splice_bounded(loop: str, tls: bool, certs: Path) -> None:
    size = 64 * MIB

    async def body(j: Joined) -> None:
        writer = asyncio.ensure_future(send(j.end_a, size, 3))
        stalled_at = -1
        async with asyncio.timeout(3 * T):
            while stalled_at != j.splice.sent[0]:  # until nothing moves for 0.5 s
                stalled_at = j.splice.sent[0]
                await asyncio.sleep(0.5)
                # what the splice holds itself: b's send buffer, one read over the mark
                held = j.b.get_extra_info("socket") and j.b._transport.get_write_buffer_size()
                assert held <= BOUND
        assert not writer.done()
        assert stalled_at < size // 2  # kernel buffers hold some; the rest waits in end_a
        assert j.a._protocol.size == 0  # nothing queued in the stream either
        async with asyncio.timeout(6 * T):
            (digest, count), sent = await asyncio.gather(receive(j.end_b, size), writer)
        assert (digest, count) == (sent, size)

    run(loop, with_splice(tls, certs, body))


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "tcp"])
@pytest.mark.parametrize("loop", LOOPS)
def test_receive_hands_each_read_to_the_callback_until_it_says_stop(
    loop: str, tls: bool, certs: Path
) -> None:
    """``receive``: what arrives goes to the callback in order, outside any task; False
    from the callback returns True and later bytes queue for ``read``; queued bytes or
    EOF return False at once; what the callback raises is raised."""
    server_ctx, client_ctx = contexts(certs) if tls else (None, None)

    async def body() -> None:
        server, got = await accept_one(server_ctx)
        try:
            client = await ByteStream.connect("127.0.0.1", server.port, ssl=client_ctx)
            served = await asyncio.wait_for(got, 10)
            seen: list[tuple[bytes, object]] = []

            def callback(data: bytes) -> bool:
                seen.append((data, asyncio.current_task()))
                return not data.endswith(b".")

            receiving = await receiving_on(served, callback)
            for word in (b"one ", b"two ", b"three."):
                client.write(word)
                await asyncio.sleep(0.05)
            assert await asyncio.wait_for(receiving, 10) is True
            assert b"".join(d for d, _ in seen) == b"one two three."
            assert {t for _, t in seen} == {None}
            client.write(b"queued")
            assert await asyncio.wait_for(served.read(), 10) == b"queued"
            client.write(b"again")
            while not served.buffered:
                await asyncio.sleep(0.01)
            assert await served.receive(callback) is False  # read what is queued first
            assert await served.read() == b"again"

            def boom(data: bytes) -> bool:
                raise ValueError(data)

            receiving = await receiving_on(served, boom)
            client.write(b"bad")
            with pytest.raises(ValueError):
                await asyncio.wait_for(receiving, 10)
            receiving = await receiving_on(served, callback)
            client.close()
            assert await asyncio.wait_for(receiving, 10) is False  # EOF
            assert await served.read() == b""
        finally:
            await server.close()

    run(loop, body())


async def receiving_on(
    stream: ByteStream, callback: Callable[[bytes], bool]
) -> asyncio.Future[bool]:
    """``stream.receive(callback)`` as a task, once it is in place (uvloop reads the
    socket before it runs a task scheduled just before: the bytes would queue)."""
    task = asyncio.ensure_future(stream.receive(callback))
    async with asyncio.timeout(T):
        while stream._protocol.receiver is not callback:
            await asyncio.sleep(0.001)
    return task

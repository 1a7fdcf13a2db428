"""asyncio TLS connections sharing their thread's ciphertext receive buffer (issue 10,
item 6): idle connections hold no 256 KiB buffer each, and bytes through many
connections at once arrive intact. Real TLS over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tracemalloc

import pytest

from hatchway.transport import tlsbuffer
from hatchway.transport.bytestream import ByteStream, start_server
from hostile import make_tls

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def tls(tmp_path_factory):  # type: ignore[no-untyped-def]
    return make_tls(tmp_path_factory.mktemp("tlsbuffer"))


async def _echo(stream: ByteStream) -> None:
    while data := await stream.read():
        stream.write(data)
        await stream.drain()


async def _connect(port: int, tls) -> ByteStream:  # type: ignore[no-untyped-def]
    return await ByteStream.connect("127.0.0.1", port, ssl=tls.client, server_hostname="127.0.0.1")


async def _open_idle(port: int, tls, count: int) -> list[ByteStream]:  # type: ignore[no-untyped-def]
    streams = []
    for _ in range(count):
        stream = await _connect(port, tls)
        stream.write(b"ping")
        assert await stream.readexactly(4) == b"ping"
        streams.append(stream)
    return streams


async def test_idle_tls_connections_hold_no_receive_buffer_each(tls) -> None:  # type: ignore[no-untyped-def]
    tlsbuffer.share_receive_buffers()
    server = await start_server(_echo, "127.0.0.1", 0, ssl=tls.server)
    count = 20
    streams: list[ByteStream] = []
    try:
        await _open_idle(server.port, tls, 2)  # warm up: the thread's buffer, caches
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            streams = await _open_idle(server.port, tls, count)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # Both ends are in this process: a client and a server connection per pair. With
        # a buffer each that is over 512 KiB a pair; shared, a few dozen KiB of objects.
        assert held / count < 128 * 1024, held / count
        assert all(tlsbuffer.shares_receive_buffer(s._transport._ssl_protocol) for s in streams)
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                await stream.aclose()
        await server.close()


async def test_bytes_through_many_tls_connections_at_once_arrive_intact(tls) -> None:  # type: ignore[no-untyped-def]
    tlsbuffer.share_receive_buffers()
    server = await start_server(_echo, "127.0.0.1", 0, ssl=tls.server)

    async def one(seed: int) -> None:
        payload = os.urandom(3 * 1024 * 1024 + seed)
        stream = await _connect(server.port, tls)
        assert tlsbuffer.shares_receive_buffer(stream._transport._ssl_protocol)

        async def send() -> None:
            for i in range(0, len(payload), 100_000):
                stream.write(payload[i : i + 100_000])
                await stream.drain()

        sender = asyncio.create_task(send())
        got = await stream.readexactly(len(payload))
        await sender
        await stream.aclose()
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()

    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(one(i) for i in range(8)))
    finally:
        await server.close()

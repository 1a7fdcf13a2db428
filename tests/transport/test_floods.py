"""Control-frame floods from a peer that never reads, against the real drivers over TLS
on 127.0.0.1: SPDY PING and WebSocket ping are answered only as fast as the peer reads
(the node's send buffer stays bounded), and a WebSocket message cannot be made of an
unbounded number of (empty) continuation frames."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable

import pytest

from hatchway.protocol import channel as ch
from hatchway.protocol import spdy_frame as fr
from hatchway.transport.base import Connection
from hatchway.transport.bytestream import READ_CHUNK, SEND_HIGH, ByteStream, start_server
from hatchway.transport.spdy import SpdyConnection
from hatchway.transport.websocket import WebSocketConnection
from hostile import make_tls

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
#: What a flood may leave queued: the send buffer's high watermark plus the replies to
#: one read (a reply is never longer than the frame it answers).
BOUND = SEND_HIGH + READ_CHUNK
#: The most a test floods: well above BOUND and the kernel's socket buffers (kept small).
FLOOD_LIMIT = 24 * 1024 * 1024
SMALL_SOCKET_BUFFER = 64 * 1024


def _small_buffers(stream: ByteStream, option: int) -> None:
    sock = stream.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, SMALL_SOCKET_BUFFER)


@contextlib.asynccontextmanager
async def flood_target(
    tmp_path, make: Callable[[ByteStream], Connection]
) -> AsyncIterator[tuple[ByteStream, list[tuple[ByteStream, Connection]]]]:
    """A server running ``make(stream)`` per connection, and a raw client to it whose
    receive buffer is small (it never reads)."""
    tls = make_tls(tmp_path)
    served: list[tuple[ByteStream, Connection]] = []

    async def handler(bs: ByteStream) -> None:
        _small_buffers(bs, socket.SO_SNDBUF)
        conn = make(bs)
        served.append((bs, conn))
        conn.start()  # type: ignore[attr-defined]
        await conn.wait_closed()

    server = await start_server(handler, "127.0.0.1", 0, ssl=tls.server)
    try:
        client = await ByteStream.connect(
            "127.0.0.1", server.port, ssl=tls.client, server_hostname="127.0.0.1"
        )
        _small_buffers(client, socket.SO_RCVBUF)
        try:
            yield client, served
        finally:
            client.abort()
    finally:
        await server.close()


async def flood(client: ByteStream, batch: bytes) -> int:
    """Write ``batch`` until the peer stops reading (our writes stall) or FLOOD_LIMIT;
    the bytes written."""
    sent = 0
    while sent < FLOOD_LIMIT:
        client.write(batch)
        sent += len(batch)
        try:
            await asyncio.wait_for(client.drain(), 2.0 * SCALE)
        except TimeoutError:
            break
    return sent


async def test_spdy_ping_flood_is_answered_only_as_fast_as_the_peer_reads(tmp_path) -> None:
    pings = b"".join(fr.PingFrame(i).serialize() for i in range(1, 2 * 5000, 2))
    async with flood_target(tmp_path, lambda bs: SpdyConnection(bs, client=False)) as (
        client,
        served,
    ):
        async with asyncio.timeout(120 * SCALE):
            sent = await flood(client, pings)
            node_stream, conn = served[0]
            queued = node_stream.write_buffered
            assert not conn.closed
    print(f"SPDY ping flood: {sent / 2**20:.1f} MiB sent, {queued / 2**10:.0f} KiB queued")
    assert sent > BOUND  # the flood outgrew what may be queued ...
    assert queued <= BOUND  # ... and the node holds no more than that


async def test_websocket_ping_flood_is_answered_only_as_fast_as_the_peer_reads(
    tmp_path,
) -> None:
    # 125 bytes of ping payload: the largest a control frame may carry.
    ping = bytes((0x89, 0x80 | 125)) + bytes(4) + bytes(125)  # mask key 0: payload as is
    batch = ping * 500

    def make(bs: ByteStream) -> Connection:
        return WebSocketConnection(bs, client=False, protocol=ch.V5)

    async with flood_target(tmp_path, make) as (client, served):
        async with asyncio.timeout(120 * SCALE):
            sent = await flood(client, batch)
            node_stream, conn = served[0]
            queued = node_stream.write_buffered
            assert not conn.closed
    print(f"WebSocket ping flood: {sent / 2**20:.1f} MiB sent, {queued / 2**10:.0f} KiB queued")
    assert sent > BOUND
    assert queued <= BOUND


def _masked(opcode: int, payload: bytes, fin: bool) -> bytes:
    assert len(payload) < 126
    head = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | len(payload))
    return head + bytes(4) + payload  # mask key 0: the payload as is


@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "one-byte"])
async def test_websocket_continuation_flood_closes_1009(tmp_path, payload: bytes) -> None:
    def make(bs: ByteStream) -> Connection:
        return WebSocketConnection(bs, client=False, protocol=ch.V5, max_fragments=1000)

    start = _masked(0x2, bytes((ch.STDIN,)), fin=False)
    cont = _masked(0x0, payload, fin=False)
    async with flood_target(tmp_path, make) as (client, served):
        client.write(start + cont * 1500)
        async with asyncio.timeout(30 * SCALE):
            answer = b""
            while chunk := await client.read():
                answer += chunk
            _, conn = served[0]
            await conn.wait_closed()
    assert answer[:1] == b"\x88"  # a Close frame ...
    code = struct.unpack("!H", answer[2:4])[0]
    assert code == 1009, answer  # ... "message too big", with the reason
    assert b"more than 1000 fragments" in answer
    assert conn._fragments is None  # type: ignore[attr-defined]


async def test_websocket_fragmented_message_over_the_size_bound_closes_1009(tmp_path) -> None:
    def make(bs: ByteStream) -> Connection:
        return WebSocketConnection(bs, client=False, protocol=ch.V5, max_message=1000)

    start = _masked(0x2, bytes((ch.STDIN,)) + bytes(99), fin=False)
    cont = _masked(0x0, bytes(100), fin=False)
    async with flood_target(tmp_path, make) as (client, served):
        client.write(start + cont * 20)  # 2100 bytes in 21 fragments, none over 1000
        async with asyncio.timeout(30 * SCALE):
            answer = b""
            while chunk := await client.read():
                answer += chunk
            _, conn = served[0]
            await conn.wait_closed()
    assert answer[:1] == b"\x88" and struct.unpack("!H", answer[2:4])[0] == 1009, answer
    assert conn.channel(ch.STDIN).buffered == 0  # type: ignore[attr-defined]

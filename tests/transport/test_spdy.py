"""SpdyConnection over real TLS on 127.0.0.1: stream setup, half-close, reset, GOAWAY,
pings, backpressure from a slow reader, and bulk throughput with hashes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator

import pytest

from hatchway.errors import ConnectionClosedError, StreamResetError
from hatchway.protocol.spdy import GoAwayReceived
from hatchway.transport.bytestream import ByteStream, start_server
from hatchway.transport.spdy import SpdyConnection
from hostile import make_tls

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA's server and client contexts (tests/hostile.py)."""
    made = make_tls(tmp_path_factory.mktemp("spdy-tls"))
    return made.server, made.client


@contextlib.asynccontextmanager
async def connected(
    tls, client_kw: dict | None = None, server_kw: dict | None = None
) -> AsyncIterator[tuple[SpdyConnection, SpdyConnection]]:
    server_ctx, client_ctx = tls
    accepted: asyncio.Queue[SpdyConnection] = asyncio.Queue()

    async def handler(bs: ByteStream) -> None:
        conn = SpdyConnection(bs, client=False, **(server_kw or {}))
        conn.start()
        accepted.put_nowait(conn)
        await conn.wait_closed()

    server = await start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    try:
        bs = await ByteStream.connect(
            "127.0.0.1", server.port, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        client = SpdyConnection(bs, client=True, **(client_kw or {}))
        async with client, asyncio.timeout(120 * SCALE):
            srv = await accepted.get()
            try:
                yield client, srv
            finally:
                await srv.close()
    finally:
        await server.close()


async def test_accept_five_sequential_streams_replied_on_arrival(tls):
    async with connected(tls) as (client, server):
        names = ["error", "stdin", "stdout", "stderr", "resize"]
        # Nobody calls accept_stream yet: each open returns only if the server replied.
        opened = [await client.open_stream({"streamType": n}) for n in names]
        assert [s.stream_id for s in opened] == [1, 3, 5, 7, 9]
        got = [await server.accept_stream() for _ in names]
        assert [s.name for s in got] == names
        assert [s.stream_id for s in got] == [1, 3, 5, 7, 9]


async def test_half_close_both_ways(tls):
    async with connected(tls) as (client, server):
        c = await client.open_stream({"streamtype": "stdin"})
        s = await server.accept_stream()
        await c.write(b"foo\nbar\n")
        await c.write_eof()
        assert await s.read_all() == b"foo\nbar\n"
        with pytest.raises(ConnectionClosedError):
            await c.write(b"after fin")
        await s.write(b"echo")  # the other half is still open
        await s.write_eof()
        assert await c.read_all() == b"echo"
        assert await s.read() == b""


async def test_reset_ends_the_stream(tls):
    async with connected(tls) as (client, server):
        c = await client.open_stream({"streamtype": "stdout"})
        s = await server.accept_stream()
        await s.write(b"partial")
        s.reset()
        for _ in range(100):
            if c.reset_code is not None:
                break
            await asyncio.sleep(0.01)
        assert c.reset_code == 5
        assert await c.read() == b""  # a reset drops what was buffered
        with pytest.raises(StreamResetError):
            await c.write(b"x")
        with pytest.raises(ConnectionClosedError):
            await s.write(b"x")
        other = await client.open_stream({"streamtype": "stderr"})  # the connection lives on
        assert other.stream_id == 3


async def test_goaway_from_the_server(tls):
    async with connected(tls) as (client, server):
        c = await client.open_stream({"streamtype": "stdout"})
        s = await server.accept_stream()
        await s.write(b"last words")
        await server.close()
        async with asyncio.timeout(10 * SCALE):
            await client.wait_closed()
        assert client.goaway == GoAwayReceived(1, 0)
        # Unread data goes with the RST_STREAM CANCEL of close() (so servers FIN first).
        assert await c.read() == b""
        with pytest.raises(ConnectionClosedError):
            await c.write(b"x")
        with pytest.raises(ConnectionClosedError):
            await client.open_stream({"streamtype": "x"})
        with pytest.raises(ConnectionClosedError):
            await server.accept_stream()


async def test_fin_then_close_delivers_everything(tls):
    async with connected(tls) as (client, server):
        c = await client.open_stream({"streamtype": "stdout"})
        s = await server.accept_stream()
        await s.write(b"all of it")
        await s.write_eof()
        await server.close()
        assert await c.read_all() == b"all of it"
        await client.wait_closed()
        assert client.goaway is not None


async def test_ping_echo_over_the_wire(tls):
    async with connected(tls, client_kw={"ping_interval": 0.02}) as (client, server):
        rtt = await client.ping(timeout=5 * SCALE)
        assert 0 <= rtt < 5 * SCALE
        assert await server.ping(timeout=5 * SCALE) >= 0  # even ids, echoed by the client
        await asyncio.sleep(0.2)
        assert client._proto._next_ping > 7  # the pinger ran
        c = await client.open_stream({"streamtype": "x"})  # no ping storm got in the way
        s = await server.accept_stream()
        await c.write(b"ok")
        assert await s.read() == b"ok"


async def _wait_stalled(counter: list[int], still: float = 0.3) -> None:
    last = -1
    while counter[0] != last:
        last = counter[0]
        await asyncio.sleep(still)


async def test_slow_reader_makes_the_writer_wait(tls):
    async with connected(tls) as (client, server):
        c = await client.open_stream({"streamtype": "stdin"})
        s = await server.accept_stream()
        chunk, total = os.urandom(256 * 1024), 64 * 1024 * 1024
        written = [0]

        async def writer() -> None:
            while written[0] < total:
                await c.write(chunk)
                written[0] += len(chunk)
            await c.write_eof()

        task = asyncio.create_task(writer())
        await _wait_stalled(written)
        assert not task.done() and written[0] < total
        receiver_memory = s.buffered + server._bs.buffered + server._proto._parser.buffered
        assert receiver_memory < 4 * 1024 * 1024, receiver_memory
        got = 0
        while data := await s.read(1 << 20):
            got += len(data)
        assert got == total
        await task


@pytest.mark.slow
async def test_bulk_256_mib_each_way_on_three_streams(tls, capsys):
    total, nstreams = 256 * 1024 * 1024, 3
    block = os.urandom(1024 * 1024)
    per = [total // nstreams + (1 if i < total % nstreams else 0) for i in range(nstreams)]

    async def send(stream, size: int) -> str:
        h, view, sent = hashlib.sha256(), memoryview(block), 0
        while sent < size:
            n = min(256 * 1024, size - sent)
            part = view[(sent % len(block)) : (sent % len(block)) + n]
            if len(part) < n:
                part = view[:n]
            h.update(part)
            await stream.write(part)
            sent += n
        await stream.write_eof()
        return h.hexdigest()

    async def receive(stream) -> str:
        h = hashlib.sha256()
        while data := await stream.read(256 * 1024):
            h.update(data)
        return h.hexdigest()

    async with connected(tls) as (client, server):
        pairs = []
        for i in range(nstreams):
            c = await client.open_stream({"streamtype": f"s{i}"})
            pairs.append((c, await server.accept_stream()))
        start = time.perf_counter()
        results = await asyncio.gather(
            *(send(c, per[i]) for i, (c, _) in enumerate(pairs)),
            *(receive(s) for _, s in pairs),
            *(send(s, per[i]) for i, (_, s) in enumerate(pairs)),
            *(receive(c) for c, _ in pairs),
        )
        elapsed = time.perf_counter() - start
    n = nstreams
    assert results[0:n] == results[n : 2 * n]  # client -> server
    assert results[2 * n : 3 * n] == results[3 * n :]  # server -> client
    with capsys.disabled():
        rate = 2 * total / elapsed / 1e6
        print(f"\nSPDY over TLS: 2 x 256 MiB in {elapsed:.2f} s = {rate:.0f} MB/s total")


async def test_a_peer_that_dies_while_our_streams_are_full_ends_the_connection(tls):
    """The reader stops reading a socket whose streams are full (backpressure), so it
    never sees the peer go; a session blocked both ways -- its command not reading stdin
    because its output waits for a window the dead peer will never open -- then waited
    for ever and its process was never killed (the soak: one `sh -c cat` left behind by
    an API server kill). The kernel knows: the connection ends within a poll or two."""
    async with connected(tls) as (client, server):
        c = await client.open_stream({"streamtype": "stdin"})
        await server.accept_stream()  # and never read
        chunk, written = os.urandom(256 * 1024), [0]

        async def writer() -> None:
            with contextlib.suppress(ConnectionClosedError, OSError):
                while True:
                    await c.write(chunk)
                    written[0] += len(chunk)

        task = asyncio.create_task(writer())
        await _wait_stalled(written)
        assert server._gate.paused  # the server's reader has stopped reading
        sock = client._bs.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client._bs.abort()  # dies as a killed process with unread data does: a reset
        async with asyncio.timeout(10 * SCALE):
            await server.wait_closed()
        assert server.closed
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def scripted_server(tls, answer) -> AsyncIterator[SpdyConnection]:  # type: ignore[no-untyped-def]
    """A client connection to a server made of the bare protocol: for each SYN_STREAM,
    ``answer(proto, stream_id)`` queues frames, all written at once (one read for us)."""
    from hatchway.protocol.spdy import SpdyProtocol, StreamOpened

    server_ctx, client_ctx = tls

    async def handler(bs: ByteStream) -> None:
        proto = SpdyProtocol(client=False)
        while data := await bs.read(65536):
            for event in proto.receive_data(data):
                if isinstance(event, StreamOpened):
                    answer(proto, event.stream_id)
            bs.writelines(proto.buffers_to_send())
            await bs.drain()

    server = await start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    try:
        bs = await ByteStream.connect(
            "127.0.0.1", server.port, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        async with SpdyConnection(bs, client=True) as client, asyncio.timeout(30 * SCALE):
            yield client
    finally:
        await server.close()


async def test_a_reply_and_a_reset_in_one_read_end_the_stream(tls):
    # kubectl's port-forward: the node replies to the data stream and resets it at once.
    def answer(proto, sid):  # type: ignore[no-untyped-def]
        proto.reply(sid)
        proto.reset_stream(sid)

    async with scripted_server(tls, answer) as client:
        stream = await client.open_stream({"streamtype": "data"}, fin=True)
        assert await stream.read() == b""
        assert stream.reset_code is not None


async def test_a_reply_and_data_with_fin_in_one_read_are_all_delivered(tls):
    # The error stream: half-closed by the client, answered with text and FIN at once.
    def answer(proto, sid):  # type: ignore[no-untyped-def]
        proto.reply(sid)
        proto.send_data(sid, b"error forwarding port 1", fin=True)

    async with scripted_server(tls, answer) as client:
        stream = await client.open_stream({"streamtype": "error"}, fin=True)
        assert await stream.read_all() == b"error forwarding port 1"
        assert stream.fin_received

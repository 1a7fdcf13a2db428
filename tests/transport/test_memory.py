"""The in-memory transport pair (``transport/memory.py``): bytes, half-close and close as
over TCP, backpressure from a reader that stops, and the faults -- delay, trickle, cut --
with every dropped byte counted. All over :class:`ByteStream`, as the drivers use it."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.errors import ConnectionClosedError
from hatchway.transport.bytestream import SEND_HIGH, ByteStream, Splice
from hatchway.transport.memory import WINDOW, MemoryPipe, stream_pair

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes in which a lost, doubled or reordered piece shows."""
    cycle = bytes((i * 7 + seed) % 251 for i in range(251))
    return (cycle * (n // 251 + 1))[:n]


async def read_n(stream: ByteStream, n: int, max_bytes: int = 1 << 20) -> tuple[bytes, list[int]]:
    """``n`` bytes (fewer at EOF), and the size of each read."""
    parts: list[bytes] = []
    sizes: list[int] = []
    got = 0
    while got < n:
        chunk = await stream.read(max_bytes)
        if not chunk:
            break
        parts.append(chunk)
        sizes.append(len(chunk))
        got += len(chunk)
    return b"".join(parts), sizes


async def test_bytes_cross_both_ways_in_order() -> None:
    pipe, a, b = stream_pair()
    data = pattern(700_001)
    async with asyncio.timeout(10 * SCALE):
        for i in range(0, len(data), 10_000):
            a.write(data[i : i + 10_000])
            b.write(data[i : i + 10_000][::-1])
        got_b, _ = await read_n(b, len(data))
        got_a, _ = await read_n(a, len(data))
    assert got_b == data
    assert got_a == b"".join(data[i : i + 10_000][::-1] for i in range(0, len(data), 10_000))
    assert pipe.a_to_b.delivered == pipe.b_to_a.delivered == len(data)
    assert pipe.settled()


async def test_write_eof_is_a_half_close() -> None:
    pipe, a, b = stream_pair()
    async with asyncio.timeout(10 * SCALE):
        a.write(b"request")
        a.write_eof()
        assert await b.readexactly(7) == b"request"
        assert await b.read() == b""
        assert b.at_eof
        answer = b"answer after the peer's EOF"
        b.write(answer)  # our side stays open for writing
        assert await a.readexactly(len(answer)) == answer
        with pytest.raises(RuntimeError):
            pipe.a.write(b"after write_eof")
        await b.aclose()
        assert await a.read() == b""
        await a.aclose()
    assert pipe.a_to_b.dropped == pipe.b_to_a.dropped == 0


async def test_close_delivers_everything_then_eof() -> None:
    pipe, a, b = stream_pair()
    data = pattern(3 * WINDOW + 5)
    async with asyncio.timeout(10 * SCALE):
        a.write(data)
        closing = asyncio.ensure_future(a.aclose())
        got, _ = await read_n(b, len(data) + 1)
        assert got == data
        assert await closing  # delivered, not cut
        assert a.is_closing and not a.cut
        await b.aclose()
    assert pipe.a_to_b.eof_delivered and pipe.a_to_b.dropped == 0


async def test_a_reader_that_stops_blocks_the_writer_and_loses_nothing() -> None:
    pipe, a, b = stream_pair()
    b.set_recv_limit(64 * 1024)
    data = pattern(4 * 1024 * 1024, seed=3)
    async with asyncio.timeout(10 * SCALE):
        a.write(data)
        drained = asyncio.ensure_future(a.drain())
        for _ in range(5):
            await asyncio.sleep(0)
        # Held: the reader's bound, the window, and above SEND_HIGH in our buffer.
        assert not drained.done()
        assert a.write_blocked
        assert a.write_buffered > SEND_HIGH
        assert b.buffered <= 64 * 1024 + 256 * 1024
        got, _ = await read_n(b, len(data))
        await drained
        assert not a.write_blocked
    assert got == data
    assert pipe.a_to_b.dropped == 0


async def test_delay_holds_each_write_back() -> None:
    loop = asyncio.get_running_loop()
    pipe, a, b = stream_pair(lambda p: setattr(p.a_to_b, "delay", 0.2))
    async with asyncio.timeout(10 * SCALE):
        sent = loop.time()
        a.write(b"first")
        a.write(b"second")
        assert await b.read() == b"first"
        assert loop.time() - sent >= 0.2
        assert await b.read() == b"second"
        b.write(b"back")  # the other direction has no delay
        assert await a.read() == b"back"
    assert pipe.a_to_b.delivered == len(b"firstsecond")


async def test_trickle_delivers_a_few_bytes_per_tick() -> None:
    loop = asyncio.get_running_loop()

    def faults(pipe: MemoryPipe) -> None:
        pipe.a_to_b.trickle = 1000
        pipe.a_to_b.tick = 0.01

    pipe, a, b = stream_pair(faults)
    data = pattern(10_500)
    async with asyncio.timeout(10 * SCALE):
        started = loop.time()
        a.write(data)
        got, sizes = await read_n(b, len(data))
    assert got == data
    assert max(sizes) <= 1000
    assert len(sizes) >= 11
    assert loop.time() - started >= 10 * 0.01  # eleven deliveries, a tick apart
    assert pipe.a_to_b.delivered == len(data)


async def test_trickle_without_a_tick_yields_between_deliveries() -> None:
    pipe, a, b = stream_pair(lambda p: setattr(p.b_to_a, "trickle", 1))
    async with asyncio.timeout(10 * SCALE):
        b.write(b"one byte at a time")
        got, sizes = await read_n(a, 18)
    assert got == b"one byte at a time"
    assert sizes == [1] * 18
    assert pipe.b_to_a.delivered == 18


async def test_cut_after_n_bytes_resets_both_ends() -> None:
    pipe, a, b = stream_pair(lambda p: setattr(p.a_to_b, "cut_after", 100_000))
    data = pattern(300_000)
    async with asyncio.timeout(10 * SCALE):
        a.write(data)
        got, _ = await read_n(b, len(data))
        assert got == data[:100_000]
        await a.wait_closed()
        await b.wait_closed()
    assert isinstance(b._protocol.exc, ConnectionResetError)
    assert isinstance(a._protocol.exc, ConnectionResetError)
    assert pipe.a_to_b.delivered == 100_000
    assert pipe.a_to_b.dropped == 200_000
    with pytest.raises(ConnectionClosedError):
        a.write(b"more")


async def test_a_one_way_cut_is_a_half_open_connection() -> None:
    def faults(pipe: MemoryPipe) -> None:
        pipe.a_to_b.cut_after = 10
        pipe.a_to_b.cut_one_way = True

    pipe, a, b = stream_pair(faults)
    async with asyncio.timeout(10 * SCALE):
        a.write(b"0123456789")
        assert await b.readexactly(10) == b"0123456789"
        assert await b.read() == b""
        await b.wait_closed()
        assert isinstance(b._protocol.exc, ConnectionResetError)
        # The sender, idle, does not know yet...
        for _ in range(3):
            await asyncio.sleep(0)
        assert not a.is_closing
        # ...until it writes again: a reset, as TCP answers a closed socket.
        a.write(b"ping")
        assert await a.read() == b""
        await a.wait_closed()
        assert isinstance(a._protocol.exc, ConnectionResetError)
    assert pipe.a_to_b.dropped == len(b"ping")


async def test_a_one_way_cut_with_bytes_in_flight_resets_the_sender_too() -> None:
    def faults(pipe: MemoryPipe) -> None:
        pipe.a_to_b.cut_after = 10
        pipe.a_to_b.cut_one_way = True

    pipe, a, b = stream_pair(faults)
    async with asyncio.timeout(10 * SCALE):
        b.write(b"from b, before the cut")
        a.write(b"0123456789 and the rest")
        assert await b.readexactly(10) == b"0123456789"
        await b.wait_closed()
        # a gets what b sent before it went, then the reset its own bytes drew.
        assert await a.readexactly(22) == b"from b, before the cut"
        assert await a.read() == b""
        await a.wait_closed()
        assert isinstance(a._protocol.exc, ConnectionResetError)
    assert pipe.a_to_b.dropped == len(b" and the rest")


async def test_cut_on_demand_ends_both_reads() -> None:
    pipe, a, b = stream_pair()
    async with asyncio.timeout(10 * SCALE):
        reads = asyncio.gather(a.read(), b.read())
        await asyncio.sleep(0)
        pipe.cut()
        assert await reads == [b"", b""]
        await asyncio.gather(a.wait_closed(), b.wait_closed())


async def test_abort_reaches_a_paused_reader_at_once() -> None:
    pipe, a, b = stream_pair()
    b.set_recv_limit(1024)
    async with asyncio.timeout(10 * SCALE):
        a.write(pattern(100_000))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not pipe.b.is_reading()  # b's bound is full: b stopped reading
        a.abort()
        await asyncio.sleep(0)  # connection_lost comes on the next turn, as in asyncio
        assert b._protocol.closed.done()
        never = asyncio.Event()
        assert not await b.wait_unless_ended(never)
    assert isinstance(b._protocol.exc, ConnectionResetError)
    assert a._protocol.exc is None


async def test_writing_to_a_closed_peer_resets_the_writer() -> None:
    pipe, a, b = stream_pair()
    async with asyncio.timeout(10 * SCALE):
        assert await b.aclose()
        assert await a.read() == b""  # the peer's EOF first
        a.write(b"late")
        await a.wait_closed()
    assert isinstance(a._protocol.exc, ConnectionResetError)
    assert pipe.a_to_b.dropped == 4


async def test_a_splice_over_two_pipes_relays_with_backpressure() -> None:
    """The API server's exec proxy, without sockets: client <-> proxy <-> backend."""
    _, client, proxy_front = stream_pair()
    _, proxy_back, backend = stream_pair()
    splice = Splice(proxy_front, proxy_back)
    splice.start()
    data = pattern(5 * 1024 * 1024, seed=11)
    async with asyncio.timeout(20 * SCALE):
        backend.write(data)
        got, _ = await read_n(client, len(data))
        client.write(b"stdin")
        assert (await read_n(backend, 5))[0] == b"stdin"
        client.write_eof()
        assert await backend.read() == b""
    assert got == data
    assert splice.sent == [5, len(data)]


async def test_a_plain_protocol_gets_data_received() -> None:
    pipe = MemoryPipe()
    received: list[bytes] = []
    eof = asyncio.Event()

    class Plain(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.append(data)

        def eof_received(self) -> bool:
            eof.set()
            return False  # asyncio then closes the transport

    a, b = pipe.connect(asyncio.Protocol(), Plain())
    a.write(b"hello")
    a.write_eof()
    async with asyncio.timeout(10 * SCALE):
        await eof.wait()
    assert received == [b"hello"]
    assert b.is_closing()


@settings(max_examples=25, deadline=None)
@given(
    writes=st.lists(st.integers(1, 200_000), min_size=1, max_size=8),
    reads=st.sampled_from([1, 1000, 65536, 1 << 20]),
    trickle=st.sampled_from([0, 1, 777, 65536]),
    recv_limit=st.sampled_from([1, 4096, 1 << 20]),
    half_close=st.booleans(),
)
def test_whatever_the_faults_the_bytes_arrive_whole_and_in_order(
    writes: list[int], reads: int, trickle: int, recv_limit: int, half_close: bool
) -> None:
    if 1 in (trickle, recv_limit, reads):
        writes = [min(n, 2000) for n in writes]  # a byte per turn or read: keep it short

    async def exchange() -> None:
        def faults(pipe: MemoryPipe) -> None:
            pipe.a_to_b.trickle = trickle

        pipe, a, b = stream_pair(faults)
        b.set_recv_limit(recv_limit)
        data = pattern(sum(writes), seed=len(writes))

        async def write() -> None:
            offset = 0
            for n in writes:
                a.write(data[offset : offset + n])
                offset += n
                await a.drain()
            if half_close:
                a.write_eof()
            else:
                await a.aclose()

        async with asyncio.timeout(30 * SCALE):
            _, (got, sizes) = await asyncio.gather(write(), read_n(b, len(data) + 1, reads))
            assert await b.read() == b""
            await b.aclose()
        assert got == data
        assert max(sizes) <= max(reads, 1)
        if trickle:
            assert max(sizes) <= trickle  # a read takes one delivery at most
        assert pipe.a_to_b.dropped == 0 and pipe.a_to_b.eof_delivered

    asyncio.run(exchange())

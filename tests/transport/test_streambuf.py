"""BufferedStream and ReceiveGate, the receive side of both drivers' streams: bytes come
back in order and bounded by the read size; EOF only once the buffer is empty; the gate
pauses the reader at exactly ``high`` buffered bytes on any stream and resumes it only
when every full stream is down to ``low``; EOF while paused keeps the pause until the
bytes are read; abort and the connection's end wake whoever waits. The driver-level
behaviour (real sockets, the peer slowed through TCP) is in test_spdy.py and
test_websocket.py."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.transport.streambuf import BufferedStream, ReceiveGate

HIGH, LOW = 100, 25


class Buffered(BufferedStream):
    """The smallest concrete stream: the receive side is all there is."""

    def __init__(self, gate: ReceiveGate) -> None:
        super().__init__(gate, {"streamtype": "stdout"})

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    async def write_eof(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        self.abort()


async def _pending(aw: object) -> asyncio.Task[object]:
    """``aw`` as a task that has run up to its first wait."""
    task = asyncio.ensure_future(aw)  # type: ignore[call-overload]
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()
    return task


# -- reading ---------------------------------------------------------------------------------
async def test_reads_return_fed_bytes_in_order_at_most_what_was_asked():
    s = Buffered(ReceiveGate(HIGH))
    s.feed(memoryview(b"abc"))  # views (what the drivers feed) are joined up to the size
    s.feed(memoryview(b"defgh"))
    assert s.buffered == 8
    assert await s.read(5) == b"abcde"
    assert await s.read(100) == b"fgh"
    s.feed(b"whole")
    assert await s.read(100) == b"whole"
    assert s.buffered == 0 and not s.at_eof


async def test_a_waiting_reader_is_woken_by_feed_then_eof_after_the_buffer():
    s = Buffered(ReceiveGate(HIGH))
    reader = await _pending(s.read())
    s.feed(b"late")
    assert await reader == b"late"
    s.feed(b"tail")
    s.feed_eof(fin=True)
    assert not s.at_eof  # bytes before the EOF are still to be read
    assert await s.read() == b"tail"
    assert await s.read() == b"" and s.at_eof
    assert await s.read() == b""  # and stays at EOF


async def test_read_views_waits_returns_buffers_releases_the_gate_and_ends_empty():
    gate = ReceiveGate(HIGH)
    s = Buffered(gate)
    reader = await _pending(s.read_views(HIGH))
    whole = b"w" * HIGH
    s.feed(whole)
    assert gate.paused  # at the bound: the connection's reader must wait
    assert await reader == [whole] and not gate.paused and s.buffered == 0
    s.feed_parts([b"ab", memoryview(b"cdef")], 6)
    assert [bytes(v) for v in await s.read_views(3)] == [b"ab", b"c"]
    s.feed_eof(fin=True)
    assert [bytes(v) for v in await s.read_views(100)] == [b"def"]
    assert await s.read_views() == [] and s.at_eof


async def test_read_all_reads_to_eof_and_bounds_the_total():
    s = Buffered(ReceiveGate(HIGH))
    s.feed_parts([b"ab", memoryview(b"cd")], 4)
    s.feed_eof()
    assert await s.read_all() == b"abcd"
    s2 = Buffered(ReceiveGate(HIGH))
    s2.feed(b"x" * 10)
    s2.feed_eof()
    with pytest.raises(Exception, match="more than 9 bytes"):
        await s2.read_all(limit=9)


async def test_fin_received_only_for_a_deliberate_first_ending():
    fin = Buffered(ReceiveGate(HIGH))
    fin.feed_eof(fin=True)
    fin.feed_eof(fin=True)  # a duplicate does not change it
    assert fin.fin_received
    lost = Buffered(ReceiveGate(HIGH))
    lost.feed_eof()  # the connection ended (reset, lost): not the peer's end of input
    lost.feed_eof(fin=True)  # a close signal after that is not taken for one
    assert not lost.fin_received


async def test_bytes_fed_after_eof_are_dropped_and_empty_feeds_ignored():
    s = Buffered(ReceiveGate(HIGH))
    s.feed(b"")
    assert s.buffered == 0
    s.feed_eof()
    s.feed(b"after")
    assert s.buffered == 0 and await s.read() == b""


async def test_an_idle_stream_and_gate_allocate_nothing_until_used():
    """What makes an idle session cheap: no chunk queue before the first bytes, no
    waiter before a read waits, no event before the reader pauses."""
    gate = ReceiveGate(HIGH)
    s = Buffered(gate)
    assert s._queue is None and s._waiter is None and gate._open is None
    assert await gate.wait_open()  # not paused: returns without making an event
    assert gate._open is None
    s.feed(b"x")
    assert s._queue is not None


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("feed"), st.integers(0, 1), st.integers(1, 60)),
            st.tuples(st.just("read"), st.integers(0, 1), st.integers(1, 80)),
            st.tuples(st.just("abort"), st.integers(0, 1), st.just(0)),
        ),
        max_size=60,
    )
)
def test_gate_and_bytes_follow_the_model(ops: list[tuple[str, int, int]]) -> None:
    """Any mix of feeds, reads and aborts on two streams of one gate: every byte read
    comes back in order, and the gate is paused exactly while some stream has reached
    ``high`` since it was last at or below ``low``."""

    async def run() -> None:
        gate = ReceiveGate(HIGH, LOW)
        streams = [Buffered(gate), Buffered(gate)]
        sent = [bytearray(), bytearray()]
        got = [bytearray(), bytearray()]
        over = [False, False]
        ended = [False, False]
        counter = 0
        for op, i, n in ops:
            s = streams[i]
            if op == "feed":
                data = bytes((counter + k) % 251 for k in range(n))
                counter += n
                s.feed(data)
                if not ended[i]:
                    sent[i] += data
                    if s.buffered >= HIGH:
                        over[i] = True
            elif op == "read":
                if s.buffered:
                    got[i] += await s.read(n)
                    if s.buffered <= LOW:
                        over[i] = False
            else:
                s.abort()
                ended[i], over[i] = True, False
                sent[i] = got[i][:]  # what was buffered is dropped
            assert gate.paused == any(over)
            assert s.buffered == len(sent[i]) - len(got[i])
        for i in (0, 1):
            assert bytes(got[i]) == bytes(sent[i][: len(got[i])])

    asyncio.run(run())


# -- the gate's edges ------------------------------------------------------------------------
async def test_pauses_at_exactly_high_not_one_byte_before():
    gate = ReceiveGate(HIGH, LOW)
    s = Buffered(gate)
    s.feed(b"x" * (HIGH - 1))
    assert not gate.paused
    s.feed(b"x")
    assert gate.paused and s.buffered == HIGH


async def test_resumes_at_low_not_one_byte_above_and_wakes_the_reader():
    gate = ReceiveGate(HIGH, LOW)
    s = Buffered(gate)
    s.feed(b"x" * HIGH)
    waiting = await _pending(gate.wait_open())
    await s.read(HIGH - LOW - 1)  # LOW + 1 left
    assert gate.paused
    await asyncio.sleep(0)
    assert not waiting.done()
    await s.read(1)  # exactly LOW left
    assert not gate.paused
    assert await waiting is True


async def test_a_second_pause_waits_again():
    gate = ReceiveGate(HIGH, LOW)
    s = Buffered(gate)
    for _ in range(2):
        s.feed(b"x" * HIGH)
        waiting = await _pending(gate.wait_open())  # not left open by the last resume
        await s.read(HIGH)
        assert await waiting is True


async def test_every_full_stream_must_drain_before_the_reader_resumes():
    gate = ReceiveGate(HIGH, LOW)
    a, b = Buffered(gate), Buffered(gate)
    a.feed(b"a" * HIGH)
    b.feed(b"b" * (2 * HIGH))
    a.feed(b"a" * HIGH)  # already counted: still one pause for a
    while a.buffered:
        await a.read(10 * HIGH)
    assert gate.paused  # b is still full
    await b.read(2 * HIGH - LOW)
    assert not gate.paused


async def test_eof_while_paused_keeps_the_pause_until_the_bytes_are_read():
    """The peer's FIN after filling the buffer: what it sent is still ours to bound, and
    the reader (other streams' data) waits until the consumer reads it."""
    gate = ReceiveGate(HIGH, LOW)
    s = Buffered(gate)
    s.feed(b"y" * HIGH)
    s.feed_eof(fin=True)
    assert gate.paused and s.fin_received
    waiting = await _pending(gate.wait_open())
    assert await s.read(HIGH) == b"y" * HIGH
    assert await waiting is True and not gate.paused
    assert await s.read() == b""


async def test_abort_wakes_readers_drops_the_buffer_and_releases_the_gate():
    gate = ReceiveGate(HIGH, LOW)
    full, idle = Buffered(gate), Buffered(gate)
    full.feed(b"z" * HIGH)
    reader = await _pending(idle.read())
    waiting = await _pending(gate.wait_open())
    idle.abort()
    assert await reader == b""
    assert gate.paused  # the other stream is still full
    full.abort()
    assert full.buffered == 0 and await full.read() == b""
    assert not gate.paused and await waiting is True
    full.abort()  # twice: the gate is not given back twice
    full.feed(b"z" * HIGH)  # after the end: dropped, no pause
    assert not gate.paused and gate._over == 0


async def test_closing_the_gate_lets_a_paused_reader_go_for_good():
    gate = ReceiveGate(HIGH, LOW)
    s = Buffered(gate)
    s.feed(b"z" * HIGH)
    waiting = await _pending(gate.wait_open())
    gate.close()
    assert await waiting is True
    assert not gate.paused and await gate.wait_open()
    assert await s.read(HIGH) == b"z" * HIGH  # the bytes stay readable


class _PeerGone:
    """A ByteStream whose peer ended the connection while the reader was paused."""

    def __init__(self) -> None:
        self.waited = 0

    async def wait_unless_ended(self, event: asyncio.Event) -> bool:
        self.waited += 1
        return False


async def test_the_serving_side_stops_waiting_when_the_peer_is_gone():
    gate = ReceiveGate(HIGH, LOW)
    Buffered(gate).feed(b"z" * HIGH)
    watch = _PeerGone()
    assert await gate.wait_open(watch) is False  # type: ignore[arg-type]
    assert watch.waited == 1


def test_a_gate_needs_a_positive_bound():
    with pytest.raises(ValueError):
        ReceiveGate(0)
    assert ReceiveGate(1024).low == 256


# --- the sink: what arrives while nothing is queued goes straight on ----------------------


class Sink:
    """Takes up to ``room`` bytes per call (all of them when None) and keeps them."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.got = bytearray()
        self.calls = 0

    def __call__(self, parts: object) -> int:
        self.calls += 1
        data = b"".join(bytes(p) for p in parts)  # type: ignore[attr-defined]
        take = len(data) if self.room is None else min(self.room, len(data))
        self.got += data[:take]
        return take


async def test_a_sink_takes_what_arrives_while_the_queue_is_empty_and_queues_the_rest():
    stream = Buffered(ReceiveGate(HIGH, LOW))
    sink = Sink(room=3)
    assert stream.set_sink(sink)
    stream.feed_parts([b"ab", memoryview(b"cdef")], 6)
    assert bytes(sink.got) == b"abc"
    assert stream.buffered == 3
    # Something is queued: the next bytes wait behind it, the sink is not asked.
    stream.feed(b"gh")
    assert sink.calls == 1
    assert await stream.read(100) == b"def"
    assert await stream.read(100) == b"gh"
    # Empty again: straight to the sink, nothing queued, no reader woken.
    sink.room = None
    reader = await _pending(stream.read(100))
    stream.feed(b"ij")
    await asyncio.sleep(0)
    assert not reader.done() and bytes(sink.got) == b"abcij" and stream.buffered == 0
    stream.set_sink(None)
    stream.feed(b"kl")
    assert await reader == b"kl"


async def test_a_sink_that_takes_nothing_leaves_the_gate_to_bound_the_queue():
    gate = ReceiveGate(HIGH, LOW)
    stream = Buffered(gate)
    stream.set_sink(Sink(room=0))
    stream.feed(b"x" * HIGH)
    assert gate.paused and stream.buffered == HIGH


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["feed", "read", "sink"]),
            st.integers(min_value=0, max_value=12),
            st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=3),
        ),
        max_size=40,
    )
)
def test_sink_and_reads_together_deliver_every_byte_once_in_order(
    ops: list[tuple[str, int, list[int]]],
) -> None:
    """What the sink took and what reads returned, in the order they happened, is what
    was fed: the session's stdin pump switches the sink on and off around its reads."""

    async def run() -> None:
        stream = Buffered(ReceiveGate(1 << 20))
        out = bytearray()
        fed = bytearray()
        counter = 0

        def sink(parts: object) -> int:
            data = b"".join(bytes(p) for p in parts)  # type: ignore[attr-defined]
            take = min(room[0], len(data))
            out.extend(data[:take])
            return take

        room = [0]
        for op, n, sizes in ops:
            if op == "feed":
                parts = []
                for size in sizes:
                    part = bytes((counter + i) % 251 for i in range(size))
                    counter += size
                    parts.append(part)
                fed.extend(b"".join(parts))
                stream.feed_parts(parts, sum(sizes))
            elif op == "read" and stream.buffered:
                out.extend(await stream.read(max(n, 1)))
            elif op == "sink":
                room[0] = n
                stream.set_sink(sink if n % 2 == 0 else None)
        while stream.buffered:
            out.extend(await stream.read(1 << 20))
        assert bytes(out) == bytes(fed)

    asyncio.run(run())

"""ChunkQueue: reads return bytes, at most what was asked, in order, joining small
buffers and splitting big ones, whatever mix of bytes and views was queued."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hatchway.transport.chunks import ChunkQueue


def test_whole_bytes_come_back_as_they_are():
    q = ChunkQueue()
    data = b"x" * 1000
    q.append(data)
    assert q.take(4096) is data
    assert q.size == 0 and not q


def test_views_come_back_as_bytes_and_split():
    q = ChunkQueue()
    q.append(memoryview(b"abcdefgh")[2:])
    first = q.take(4)
    assert type(first) is bytes and first == b"cdef"
    assert q.size == 2
    assert q.take(4) == b"gh"
    assert q.take(4) == b""


def test_small_views_are_joined_up_to_the_limit_bytes_are_not_copied():
    q = ChunkQueue()
    ef = b"ef"
    q.extend([memoryview(b"ab"), memoryview(b"cd"), memoryview(b"xy"), ef, b"gh"], 10)
    assert q.take(5) == b"abcdx"
    assert q.size == 5
    assert q.take(5) == b"y"
    assert q.take(5) is ef
    assert q.take(5) == b"gh"


def test_clear():
    q = ChunkQueue()
    q.append(b"abc")
    q.take(1)
    q.clear()
    assert q.size == 0 and q.take(10) == b""
    q.append(b"xyz")
    assert q.take(10) == b"xyz"


@given(
    st.lists(st.tuples(st.binary(min_size=1, max_size=50), st.booleans()), max_size=20),
    st.lists(st.integers(1, 80), min_size=1, max_size=10),
)
def test_any_mix_reads_back_in_order(buffers, sizes):
    q = ChunkQueue()
    for data, view in buffers:
        q.append(memoryview(data) if view else data)
    expected = b"".join(d for d, _ in buffers)
    got, i = [], 0
    while q:
        want = sizes[i % len(sizes)]
        chunk = q.take(want)
        assert type(chunk) is bytes and 0 < len(chunk) <= want
        got.append(chunk)
        i += 1
        assert q.size == len(expected) - len(b"".join(got))
    assert b"".join(got) == expected


def test_take_views_hands_out_the_queued_buffers_without_copies():
    q = ChunkQueue()
    whole, part = b"abcdef", memoryview(b"0123456789")
    q.extend([whole, part], 16)
    views = q.take_views(8)
    assert views[0] is whole and bytes(views[1]) == b"01"
    assert q.size == 8
    assert [bytes(v) for v in q.take_views(100)] == [b"23456789"]
    assert q.size == 0 and q.take_views(4) == []


@given(
    st.lists(st.tuples(st.binary(min_size=1, max_size=50), st.booleans()), max_size=20),
    st.lists(st.integers(1, 80), min_size=1, max_size=10),
    st.lists(st.booleans(), min_size=1, max_size=10),
)
def test_take_views_and_take_mixed_read_back_in_order(buffers, sizes, as_views):
    q = ChunkQueue()
    for data, view in buffers:
        q.append(memoryview(data) if view else data)
    expected = b"".join(d for d, _ in buffers)
    got, i = b"", 0
    while q:
        want = sizes[i % len(sizes)]
        if as_views[i % len(as_views)]:
            parts = q.take_views(want)
            assert parts and all(len(p) for p in parts)
            chunk = b"".join(bytes(p) for p in parts)
        else:
            chunk = q.take(want)
        assert 0 < len(chunk) <= want
        got += chunk
        i += 1
        assert q.size == len(expected) - len(got)
    assert got == expected

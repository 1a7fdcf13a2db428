"""The WebSocket data fast path: frames we build are the ones websockets builds (and
parses back), and the splitter hands exactly the fast frames over, every other frame
whole to the Protocol, fed whole, byte by byte and with garbage after."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from hatchway.protocol.websocket_frame import FastMessage, FrameSplitter, data_frame


def _join(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 65534, 65535, 65536, 300_000])
def test_server_frame_is_what_websockets_writes(size):
    data = os.urandom(size)
    ours = _join(data_frame(1, data, mask=False))
    theirs = Frame(Opcode.BINARY, b"\x01" + data).serialize(mask=False)
    assert ours == theirs


@pytest.mark.parametrize("size", [0, 1, 3, 124, 125, 126, 65535, 65536, 300_000])
def test_client_frame_is_masked_and_parses(size):
    data = os.urandom(size)
    wire = _join(data_frame(2, data, mask=True))
    assert wire[1] & 0x80
    server = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
    server.receive_data(wire)
    [frame] = server.events_received()
    assert frame.opcode is Opcode.BINARY and frame.fin
    assert frame.data == b"\x02" + data
    # ... and through our own splitter as the server
    splitter = FrameSplitter(server=True, max_size=None)
    splitter.feed(wire)
    msg = splitter.next(True)
    assert isinstance(msg, FastMessage)
    assert (msg.channel, _join(msg.data), msg.size) == (2, data, size)
    assert splitter.next(True) is None and splitter.buffered == 0


def test_unmasked_data_is_not_copied_small_messages_are_one_buffer():
    data = os.urandom(4096)
    parts = data_frame(1, data, mask=False)
    assert parts[1] is data
    assert len(data_frame(1, b"x" * 100, mask=False)) == 1
    assert len(data_frame(1, b"x" * 100, mask=True)) == 1


def _drain(splitter: FrameSplitter, fast_ok: bool = True) -> list:
    out = []
    while (item := splitter.next(fast_ok)) is not None:
        out.append(item)
    return out


def _feed(splitter: FrameSplitter, wire: bytes, step: int | None) -> list:
    out = []
    step = step or len(wire)
    for i in range(0, len(wire), step):
        splitter.feed(wire[i : i + step])
        out += _drain(splitter)
    return out


def _describe(items) -> list:
    return [
        ("fast", m.channel, _join(m.data)) if isinstance(m, FastMessage) else ("raw", m)
        for m in items
    ]


@pytest.mark.parametrize("step", [None, 1, 3, 7, 1000])
def test_splitter_fast_and_raw_frames(step):
    big = os.urandom(70_000)
    frames = [
        Frame(Opcode.BINARY, b"\x01hello"),
        Frame(Opcode.PING, b"p"),
        Frame(Opcode.BINARY, b"\x02" + big),
        Frame(Opcode.BINARY, b"\x01part", fin=False),  # fragmented: the Protocol's
        Frame(Opcode.CONT, b"rest"),
        Frame(Opcode.TEXT, b"1aGk="),
        Frame(Opcode.BINARY, b""),  # empty: the Protocol's (and ours to refuse)
        Frame(Opcode.BINARY, b"\x01"),  # channel byte only
    ]
    wires = [f.serialize(mask=False) for f in frames]
    splitter = FrameSplitter(server=False, max_size=1 << 20)
    got = _describe(_feed(splitter, b"".join(wires), step))
    assert got == [
        ("fast", 1, b"hello"),
        ("raw", wires[1]),
        ("fast", 2, big),
        ("raw", wires[3]),
        ("raw", wires[4]),
        ("raw", wires[5]),
        ("raw", wires[6]),
        ("fast", 1, b""),
    ]
    assert splitter.buffered == 0 and not splitter.passthrough


def test_splitter_keeps_an_incomplete_frame_and_gives_it_back():
    wire = Frame(Opcode.BINARY, b"\x01" + b"x" * 1000).serialize(mask=False)
    splitter = FrameSplitter(server=False, max_size=None)
    splitter.feed(wire[:500])
    assert splitter.next(True) is None
    assert splitter.buffered == 500
    assert splitter.take_all() == wire[:500]


def test_splitter_wrong_masking_goes_to_the_protocol():
    masked = Frame(Opcode.BINARY, b"\x01hi").serialize(mask=True)
    splitter = FrameSplitter(server=False, max_size=None)
    splitter.feed(masked)
    assert _drain(splitter) == [masked]
    unmasked = Frame(Opcode.BINARY, b"\x01hi").serialize(mask=False)
    splitter = FrameSplitter(server=True, max_size=None)
    splitter.feed(unmasked)
    assert _drain(splitter) == [unmasked]


def test_splitter_not_fast_when_told():
    wire = Frame(Opcode.BINARY, b"\x01hello").serialize(mask=False)
    splitter = FrameSplitter(server=False, max_size=None)
    splitter.feed(wire)
    assert _drain(splitter, fast_ok=False) == [wire]


def test_oversize_frame_passes_everything_through_at_its_header():
    head = Frame(Opcode.BINARY, b"\x01" + bytes(200)).serialize(mask=False)[:4]
    splitter = FrameSplitter(server=False, max_size=100)
    splitter.feed(head + b"garbage")
    assert splitter.next(True) == head + b"garbage"
    assert splitter.passthrough
    splitter.feed(b"more")
    assert splitter.next(True) == b"more"
    assert splitter.next(True) is None


def test_garbage_after_a_frame_stays_buffered():
    wire = Frame(Opcode.BINARY, b"\x03ok").serialize(mask=False)
    splitter = FrameSplitter(server=False, max_size=None)
    splitter.feed(wire + b"\x82")
    assert _describe(_drain(splitter)) == [("fast", 3, b"ok")]
    assert splitter.take_all() == b"\x82"


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.lists(st.integers(1, 400), min_size=1, max_size=20),
    st.booleans(),
)
def test_splitter_any_chunking(payloads, cuts, server):
    frames = [Frame(Opcode.BINARY, bytes((i % 5,)) + p) for i, p in enumerate(payloads)]
    wire = b"".join(f.serialize(mask=server) for f in frames)
    splitter = FrameSplitter(server=server, max_size=None)
    out, pos, i = [], 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        splitter.feed(wire[pos : pos + step])
        out += _drain(splitter)
        pos, i = pos + step, i + 1
    assert _describe(out) == [("fast", i % 5, p) for i, p in enumerate(payloads)]

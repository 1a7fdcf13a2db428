"""SPDY frame codec: the kubectl capture byte for byte, chunked feeding, round trips, and
everything spdystream would reject."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.errors import LimitExceededError, ProtocolError
from hatchway.protocol import spdy_frame as fr

from . import spdy_vectors

EXEC = spdy_vectors.load("spdy_kubectl_exec.txt")
OTHER = spdy_vectors.load("spdy_other_frames.txt")
TYPES = {
    "DATA": fr.DataFrame,
    "SYN_STREAM": fr.SynStreamFrame,
    "SYN_REPLY": fr.SynReplyFrame,
    "RST_STREAM": fr.RstStreamFrame,
    "PING": fr.PingFrame,
    "GOAWAY": fr.GoAwayFrame,
}


def feed_whole(data: bytes) -> list[fr.Frame]:
    return fr.parse_frames(data)


def feed_bytewise(data: bytes) -> list[fr.Frame]:
    parser = fr.FrameParser()
    frames = []
    for i in range(len(data)):
        frames += parser.feed(data[i : i + 1])
    assert parser.buffered == 0
    return frames


def feed_random(data: bytes, seed: int = 0) -> list[fr.Frame]:
    rng = random.Random(seed)
    parser = fr.FrameParser()
    frames, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 40)
        frames += parser.feed(data[pos : pos + step])
        pos += step
    assert parser.buffered == 0
    return frames


FEEDERS = [feed_whole, feed_bytewise, feed_random]


def check_fields(frame: fr.Frame, rec: spdy_vectors.Record) -> None:
    f = rec.fields
    assert isinstance(frame, TYPES[rec.head[1]])
    if isinstance(frame, fr.DataFrame):
        assert (frame.stream_id, frame.data, frame.fin) == (
            f["stream_id"],
            f["data"].encode(),
            f["fin"],
        )
    elif isinstance(frame, fr.SynStreamFrame):
        assert (frame.stream_id, frame.associated_to, frame.priority, frame.slot, frame.flags) == (
            f["stream_id"],
            0,
            0,
            0,
            0,
        )
    elif isinstance(frame, fr.SynReplyFrame):
        assert (frame.stream_id, frame.flags) == (f["stream_id"], 0)
    elif isinstance(frame, fr.RstStreamFrame):
        assert (frame.stream_id, frame.status) == (f["stream_id"], f["status"])
    elif isinstance(frame, fr.PingFrame):
        assert frame.ping_id == f["ping_id"]
    elif isinstance(frame, fr.GoAwayFrame):
        assert (frame.last_good_stream_id, frame.status) == (f["last_good"], f["status"])


@pytest.mark.parametrize("feed", FEEDERS)
@pytest.mark.parametrize("way", ["C>S", "S>C"])
def test_kubectl_capture_each_direction(feed, way):
    records = spdy_vectors.direction(EXEC, way)
    frames = feed(b"".join(r.raw for r in records))
    assert len(frames) == len(records)
    for frame, rec in zip(frames, records, strict=True):
        check_fields(frame, rec)
        assert frame.serialize() == rec.raw  # byte-exact both ways


@pytest.mark.parametrize("rec", OTHER, ids=lambda r: " ".join(r.head))
def test_other_kubectl_frames(rec):
    (frame,) = fr.parse_frames(rec.raw)
    check_fields(frame, rec)
    assert frame.serialize() == rec.raw


def test_garbage_after_frames_stays_buffered_or_fails_cleanly():
    data = b"".join(r.raw for r in EXEC)
    parser = fr.FrameParser()
    assert len(parser.feed(data + b"\x00\x00\x00\x09\x00\x00")) == len(EXEC)
    assert parser.buffered == 6
    with pytest.raises(ProtocolError):
        fr.parse_frames(data + b"\x00\x00\x00\x09\x00\x00")
    with pytest.raises(ProtocolError):
        fr.FrameParser().feed(data + b"\x80\x03\x00\x05\x00\x00\x00\x00")


def test_data_header_hot_path():
    assert fr.data_header(5, 8) == bytes.fromhex("00000005 00000008")
    assert fr.data_header(3, 0, fin=True) == bytes.fromhex("00000003 01000000")


# -- round trips --------------------------------------------------------------------------
sid = st.integers(1, fr.MAX_STREAM_ID)
u32 = st.integers(0, 0xFFFFFFFF)
block = st.binary(max_size=64)
frames = st.one_of(
    st.builds(fr.DataFrame, sid, st.binary(max_size=300), st.booleans()),
    st.builds(
        fr.SynStreamFrame,
        sid,
        block,
        st.integers(0, fr.MAX_STREAM_ID),
        st.integers(0, 7),
        st.integers(0, 255),
        st.integers(0, 3),
    ),
    st.builds(fr.SynReplyFrame, sid, block, st.integers(0, 1)),
    st.builds(fr.RstStreamFrame, sid, st.integers(1, 0xFFFFFFFF)),
    st.builds(
        fr.SettingsFrame,
        st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFFFF), u32), max_size=5).map(
            tuple
        ),
        st.integers(0, 1),
    ),
    st.builds(fr.PingFrame, st.integers(1, 0xFFFFFFFF)),
    st.builds(fr.GoAwayFrame, st.integers(0, fr.MAX_STREAM_ID), u32),
    st.builds(fr.HeadersFrame, sid, block, st.integers(0, 1)),
    st.builds(
        fr.WindowUpdateFrame, st.integers(0, fr.MAX_STREAM_ID), st.integers(0, fr.MAX_STREAM_ID)
    ),
)


@given(st.lists(frames, max_size=8), st.integers(0, 1000))
def test_round_trip_every_frame_type(items, seed):
    data = b"".join(f.serialize() for f in items)
    for feed in (feed_whole, feed_bytewise):
        assert feed(data) == items
    assert feed_random(data, seed) == items


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data):
    parser = fr.FrameParser(max_data_length=100, max_control_length=100)
    try:
        parser.feed(data)
    except ProtocolError:
        return
    assert parser.buffered < 8 + 100


# -- what spdystream rejects ------------------------------------------------------------
def control(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)) + payload


BAD = {
    "data-stream-0": bytes.fromhex("00000000 00000001 41"),
    "syn-stream-0": control(1, 0, bytes(10) + b"x"),
    "syn-stream-short": control(1, 0, bytes(9)),
    "syn-reply-0": control(2, 0, bytes(4)),
    "syn-reply-short": control(2, 0, bytes(3)),
    "headers-0": control(8, 0, bytes(4)),
    "rst-stream-0": control(3, 0, struct.pack(">II", 0, 5)),
    "rst-status-0": control(3, 0, struct.pack(">II", 1, 0)),
    "rst-length": control(3, 0, struct.pack(">III", 1, 5, 0)),
    "rst-flags": control(3, 1, struct.pack(">II", 1, 5)),
    "settings-length": control(4, 0, struct.pack(">II", 1, 7)),
    "settings-count": control(4, 0, struct.pack(">III", 2, 7, 1)),
    "ping-0": control(6, 0, struct.pack(">I", 0)),
    "ping-flags": control(6, 1, struct.pack(">I", 1)),
    "ping-length": control(6, 0, struct.pack(">II", 1, 0)),
    "goaway-length": control(7, 0, struct.pack(">I", 0)),
    "goaway-flags": control(7, 1, struct.pack(">II", 0, 0)),
    "window-length": control(9, 0, struct.pack(">I", 1)),
    "window-flags": control(9, 1, struct.pack(">II", 1, 1)),
    "noop-5": control(5, 0, b""),
    "credential-10": control(10, 0, b""),
    "type-0": control(0, 0, b""),
    "type-ffff": control(0xFFFF, 0, b""),
}


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("feed", FEEDERS)
def test_rejects(name, feed):
    with pytest.raises(ProtocolError) as info:
        feed(BAD[name])
    assert not isinstance(info.value, LimitExceededError)
    assert info.value.code == fr.GoAwayStatus.PROTOCOL_ERROR


def test_truncated_frames_wait_then_fail_at_end():
    data = EXEC[0].raw
    for cut in range(len(data)):
        parser = fr.FrameParser()
        assert parser.feed(data[:cut]) == []
        assert parser.buffered == cut
        with pytest.raises(ProtocolError):
            fr.parse_frames(data[:cut] if cut else b"\x80")


@pytest.mark.parametrize(
    "head",
    [bytes.fromhex("00000001 00100001"), control(1, 0, b"")[:4] + bytes.fromhex("00100001")],
)
def test_oversize_frame_rejected_on_its_header(head):
    parser = fr.FrameParser(max_data_length=1 << 20, max_control_length=1 << 20)
    assert parser.feed(head[:7]) == []
    with pytest.raises(LimitExceededError):
        parser.feed(head[7:])
    assert parser.buffered == 0  # the payload is never buffered


def test_version_field_not_checked():
    ping = bytearray(fr.PingFrame(7).serialize())
    ping[1] = 2  # SPDY/2 version: spdystream accepts it
    assert fr.parse_frames(bytes(ping)) == [fr.PingFrame(7)]


def test_syn_stream_priority_and_flags_decode():
    frame = fr.SynStreamFrame(9, b"blk", associated_to=3, priority=5, slot=2, flags=3)
    raw = frame.serialize()
    assert raw[16] == 5 << 5
    assert fr.parse_frames(raw) == [frame]


def test_data_payloads_are_views_of_the_chunk_or_joined_once():
    one = fr.DataFrame(1, b"a" * 1000).serialize()
    two = fr.DataFrame(3, b"b" * 1000, fin=True).serialize()
    parser = fr.FrameParser()
    [first] = parser.feed(one + two[:500])
    assert isinstance(first.data, memoryview) and first.data == b"a" * 1000
    [second] = parser.feed(two[500:])
    assert isinstance(second.data, bytes) and second.data == b"b" * 1000 and second.fin
    assert parser.buffered == 0


def test_fed_buffer_may_be_reused_by_the_caller():
    buf = bytearray(fr.DataFrame(1, b"xyz").serialize())
    [frame] = fr.FrameParser().feed(buf)
    buf[8:] = b"???"
    assert frame.data == b"xyz"

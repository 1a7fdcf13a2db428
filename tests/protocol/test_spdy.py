"""SPDY connection state: the kubectl session replayed, stream rules, ping parity, GOAWAY,
limits, and the state tables checked pair by pair against the real protocol object."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.errors import LimitExceededError, ProtocolError
from hatchway.protocol import spdy_frame as fr
from hatchway.protocol.spdy import (
    CONNECTION_TRANSITIONS,
    DISCARD,
    STREAM_TRANSITIONS,
    ConnectionInput,
    ConnectionState,
    DataReceived,
    GoAwayReceived,
    PingAcknowledged,
    SpdyLimits,
    SpdyProtocol,
    SpdyUsageError,
    StreamError,
    StreamInput,
    StreamOpened,
    StreamReplied,
    StreamReset,
    StreamState,
    next_connection_state,
    next_stream_state,
)
from hatchway.protocol.spdy_header import HeaderCompressor, HeaderDecompressor

from . import spdy_vectors

EXEC = spdy_vectors.load("spdy_kubectl_exec.txt")
S, I = StreamState, StreamInput  # noqa: E741


def frames_of(data: bytes) -> list[fr.Frame]:
    return fr.parse_frames(data)


def feed(proto: SpdyProtocol, data: bytes, mode: str = "whole") -> list:
    if mode == "whole":
        return proto.receive_data(data)
    rng = random.Random(1)
    events, pos = [], 0
    while pos < len(data):
        step = 1 if mode == "bytes" else rng.randint(1, 50)
        events += proto.receive_data(data[pos : pos + step])
        pos += step
    return events


def pair() -> tuple[SpdyProtocol, SpdyProtocol]:
    return SpdyProtocol(client=True), SpdyProtocol(client=False)


def pump(a: SpdyProtocol, b: SpdyProtocol) -> tuple[list, list]:
    """Deliver what each side queued to the other; return (events at a, events at b)."""
    return a.receive_data(b.data_to_send()), b.receive_data(a.data_to_send())


# -- the kubectl session, replayed ------------------------------------------------------
@pytest.mark.parametrize("mode", ["whole", "bytes", "chunks"])
def test_server_side_of_the_kubectl_session(mode):
    server = SpdyProtocol(client=False)
    events = []
    sent = HeaderDecompressor()
    for rec in spdy_vectors.direction(EXEC, "C>S"):
        got = feed(server, rec.raw, mode)
        events += got
        for ev in got:
            if isinstance(ev, StreamOpened):
                server.reply(ev.stream_id)
                (reply,) = frames_of(server.data_to_send())
                assert isinstance(reply, fr.SynReplyFrame) and reply.stream_id == ev.stream_id
                assert sent.decode(reply.header_block) == {}
            elif isinstance(ev, DataReceived) and ev.fin and ev.stream_id == 3:
                for sid, payload in [(5, b"foo\nbar\n"), (5, b""), (7, b"")]:
                    server.send_data(sid, payload, fin=not payload)
                server.send_data(1, b'{"metadata":{},"status":"Success"}')
                server.send_data(1, b"", fin=True)
                ours = server.data_to_send()
                want = [r.raw for r in spdy_vectors.direction(EXEC, "S>C") if r.head[1] == "DATA"]
                assert ours == b"".join(want)  # byte-exact, same order as the capture
    opened = [(e.stream_id, e.headers["streamtype"]) for e in events if isinstance(e, StreamOpened)]
    assert opened == [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")]
    assert DataReceived(3, b"foo\nbar\n") in events and DataReceived(3, b"", True) in events
    assert [e.stream_id for e in events if isinstance(e, StreamReset)] == [5, 7, 1]
    assert events[-1] == GoAwayReceived(0, 0)
    assert server.open_streams == [3]  # stdin: the client FIN-ed it, the server did not
    assert server.state is ConnectionState.GOAWAY_RECEIVED


@pytest.mark.parametrize("mode", ["whole", "bytes", "chunks"])
def test_client_side_of_the_kubectl_session(mode):
    client = SpdyProtocol(client=True)
    for name in ["error", "stdin", "stdout", "stderr"]:
        client.open_stream({"streamType": name})
    ours = frames_of(client.data_to_send())
    theirs = frames_of(b"".join(r.raw for r in spdy_vectors.direction(EXEC, "C>S")[:4]))
    mine, kubectl = HeaderDecompressor(), HeaderDecompressor()
    for a, b in zip(ours, theirs, strict=True):  # same content, zlib bytes may differ
        assert (a.stream_id, a.flags) == (b.stream_id, b.flags)
        assert mine.decode(a.header_block) == kubectl.decode(b.header_block)
    events = feed(client, b"".join(r.raw for r in spdy_vectors.direction(EXEC, "S>C")), mode)
    assert [e.stream_id for e in events if isinstance(e, StreamReplied)] == [1, 3, 5, 7]
    data = [e for e in events if isinstance(e, DataReceived)]
    assert data[0] == DataReceived(5, b"foo\nbar\n")
    assert DataReceived(1, b'{"metadata":{},"status":"Success"}') in data


# -- streams ----------------------------------------------------------------------------
def test_ids_parity_and_increase():
    c, s = pair()
    assert [c.open_stream({"streamtype": "x"}) for _ in range(3)] == [1, 3, 5]
    assert [s.open_stream({}) for _ in range(2)] == [2, 4]


def test_full_exchange_with_half_close_and_forgetting():
    c, s = pair()
    sid = c.open_stream({"streamtype": "stdin"})
    _, evs = pump(c, s)
    assert evs == [StreamOpened(1, {"streamtype": "stdin"})]
    s.reply(sid)
    evc, _ = pump(c, s)
    assert evc == [StreamReplied(1, {})]
    c.send_data(sid, b"hi", fin=True)
    _, evs = pump(c, s)
    assert evs == [DataReceived(1, b"hi", True)]
    assert s.stream_state(sid) is S.HALF_CLOSED_REMOTE
    assert c.stream_state(sid) is S.HALF_CLOSED_LOCAL
    s.send_data(sid, b"back")
    s.send_data(sid, b"", fin=True)
    evc, _ = pump(c, s)
    assert evc == [DataReceived(1, b"back"), DataReceived(1, b"", True)]
    assert c.open_streams == [] and s.open_streams == []


def test_data_before_reply_is_discarded_and_never_sent():
    c, s = pair()
    sid = c.open_stream({})
    with pytest.raises(SpdyUsageError):
        c.send_data(sid, b"early")
    pump(c, s)
    # The server has not replied: it may not send either.
    with pytest.raises(SpdyUsageError):
        s.send_data(sid, b"early")
    # A peer that does send early: spdystream drops the frame.
    assert c.receive_data(fr.DataFrame(sid, b"early").serialize()) == []
    assert s.receive_data(fr.DataFrame(sid, b"early", True).serialize()) == []


def test_too_small_and_wrong_parity_ids_get_rst_not_fatal():
    s = SpdyProtocol(client=False)
    comp = HeaderCompressor()
    syn = lambda sid: fr.SynStreamFrame(sid, comp.encode({})).serialize()  # noqa: E731
    assert len(s.receive_data(syn(5))) == 1
    for bad in (3, 5, 6):  # below the last, equal, our own (even) parity
        assert s.receive_data(syn(bad)) == []
        assert frames_of(s.data_to_send()) == [fr.RstStreamFrame(bad, fr.RstStatus.PROTOCOL_ERROR)]
    assert len(s.receive_data(syn(7))) == 1  # still alive, zlib context still in step


def test_reply_twice_and_data_after_fin_are_stream_errors():
    c, s = pair()
    sid = c.open_stream({})
    pump(c, s)
    s.reply(sid)
    pump(c, s)
    evs = c.receive_data(fr.SynReplyFrame(sid, s._compressor.encode({})).serialize())
    assert evs == [StreamReset(sid, fr.RstStatus.STREAM_IN_USE, remote=False)]
    c2, s2 = pair()
    sid = c2.open_stream({})
    pump(c2, s2)
    s2.reply(sid)
    pump(c2, s2)
    s2.send_data(sid, b"", fin=True)
    pump(c2, s2)
    evs = c2.receive_data(fr.DataFrame(sid, b"late").serialize())
    assert evs == [StreamReset(sid, fr.RstStatus.STREAM_ALREADY_CLOSED, remote=False)]
    assert frames_of(c2.data_to_send()) == [
        fr.RstStreamFrame(sid, fr.RstStatus.STREAM_ALREADY_CLOSED)
    ]


def test_reset_both_ways():
    c, s = pair()
    sid = c.open_stream({})
    pump(c, s)
    s.reply(sid)
    pump(c, s)
    c.reset_stream(sid)
    _, evs = pump(c, s)
    assert evs == [StreamReset(sid, fr.RstStatus.CANCEL)]
    assert c.open_streams == s.open_streams == []
    c.reset_stream(sid)  # forgotten: no frame
    assert c.data_to_send() == b""
    assert s.receive_data(fr.DataFrame(sid, b"x").serialize()) == []  # unknown: ignored


def test_send_data_splits_above_max_frame():
    c = SpdyProtocol(client=True, limits=SpdyLimits(max_send_data=10))
    s = SpdyProtocol(client=False)
    sid = c.open_stream({})
    pump(c, s)
    s.reply(sid)
    pump(c, s)
    c.send_data(sid, bytes(range(25)), fin=True)
    out = c.buffers_to_send()
    assert len(out) == 6  # header + payload view, three times: no joined copy
    frames = frames_of(b"".join(out))
    assert [len(f.data) for f in frames] == [10, 10, 5]
    assert [f.fin for f in frames] == [False, False, True]


# -- ping, GOAWAY, ignored frames -------------------------------------------------------
def test_ping_parity_rule():
    c, s = pair()
    assert s.receive_data(fr.PingFrame(1).serialize()) == []
    assert s.data_to_send() == fr.PingFrame(1).serialize()  # echoed, identical
    assert s.receive_data(fr.PingFrame(2).serialize()) == []  # own parity, not ours: ignored
    assert s.data_to_send() == b""
    pid = c.ping()
    assert pid == 1 and c.ping() == 3
    evc, _ = pump(c, s)
    assert evc == []
    evc, _ = pump(c, s)
    assert evc == [PingAcknowledged(1), PingAcknowledged(3)]


def test_no_ping_storm():
    c, s = pair()
    c.ping()
    s.ping()
    total = 0
    for _ in range(10):
        a, b = c.data_to_send(), s.data_to_send()
        total += len(a) + len(b)
        s.receive_data(a)
        c.receive_data(b)
    assert total == 4 * 12  # two pings, two echoes, then silence


def test_nothing_processed_after_goaway():
    s = SpdyProtocol(client=False)
    comp = HeaderCompressor()
    data = fr.GoAwayFrame(0, 0).serialize() + fr.SynStreamFrame(1, comp.encode({})).serialize()
    assert s.receive_data(data) == [GoAwayReceived(0, 0)]
    assert s.receive_data(fr.PingFrame(1).serialize()) == []
    assert s.data_to_send() == b""
    with pytest.raises(SpdyUsageError):
        s.open_stream({})


def test_goaway_reports_last_peer_stream_and_refuses_new_ones():
    c, s = pair()
    c.open_stream({})
    c.open_stream({})
    pump(c, s)
    s.goaway()
    s.goaway()  # once only
    assert frames_of(s.data_to_send()) == [fr.GoAwayFrame(3, 0)]
    c.open_stream({})
    pump(c, s)
    assert frames_of(s.data_to_send()) == [fr.RstStreamFrame(5, fr.RstStatus.REFUSED_STREAM)]


def test_refuse_streams_refuses_later_streams_and_keeps_the_open_ones():
    c, s = pair()
    first = c.open_stream({"streamtype": "stdout"})
    pump(c, s)
    s.reply(first)
    s.refuse_streams()
    pump(c, s)
    later = c.open_stream({"streamtype": "stdin"})
    _, events = pump(c, s)
    assert events == []  # not reported: nobody would read it
    assert frames_of(s.data_to_send()) == [fr.RstStreamFrame(later, fr.RstStatus.REFUSED_STREAM)]
    # A header block the freed context cannot decode is skipped; its FIN still counts.
    c.send_data(first, b"in")
    block = c._compressor.encode({"x": "y"})
    events = s.receive_data(
        c.data_to_send() + fr.HeadersFrame(first, block, fr.FLAG_FIN).serialize()
    )
    assert events == [DataReceived(first, b"in", False), DataReceived(first, b"", True)]
    s.send_data(first, b"out", fin=True)
    assert c.receive_data(s.data_to_send()) == [DataReceived(first, b"out", True)]
    with pytest.raises(SpdyUsageError):
        s.open_stream({})
    with pytest.raises(SpdyUsageError):
        s.reply(later)


def test_refuse_streams_frees_the_header_contexts():
    """Issue 10, item 6: what an idle exec session's connection holds for zlib."""
    import tracemalloc

    def serve() -> tuple[SpdyProtocol, int]:
        c, s = pair()
        for name in ("error", "stdin", "stdout", "stderr"):
            sid = c.open_stream({"streamtype": name, "port": "80"})
            pump(c, s)
            s.reply(sid)
        return s, tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        s, held = serve()
        s.refuse_streams()
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert freed > 32 * 1024, freed  # the inflate window alone is 32 KiB


def test_settings_and_window_update_ignored():
    s = SpdyProtocol(client=False)
    data = fr.SettingsFrame(((0, 4, 100),)).serialize() + fr.WindowUpdateFrame(1, 5).serialize()
    assert s.receive_data(data) == []
    assert s.data_to_send() == b""


# -- faults and limits ------------------------------------------------------------------
def test_fatal_errors_queue_goaway_and_stop():
    s = SpdyProtocol(client=False)
    with pytest.raises(ProtocolError):
        s.receive_data(b"\x80\x03\x00\x05\x00\x00\x00\x00")
    assert frames_of(s.data_to_send()) == [fr.GoAwayFrame(0, fr.GoAwayStatus.PROTOCOL_ERROR)]
    assert s.state is ConnectionState.CLOSED
    assert s.receive_data(fr.PingFrame(1).serialize()) == []


@pytest.mark.parametrize(
    "headers", [{"StreamType": "x"}, {"host": "h"}, {"connection": "close"}], ids=str
)
def test_bad_syn_stream_headers_are_fatal(headers):
    from hatchway.protocol.spdy_header import encode_block

    comp = HeaderCompressor()
    raw = encode_block({k.lower(): v for k, v in headers.items()})
    if "StreamType" in headers:
        raw = raw.replace(b"streamtype", b"StreamType")
    s = SpdyProtocol(client=False)
    with pytest.raises(ProtocolError):
        s.receive_data(fr.SynStreamFrame(1, comp.compress(raw)).serialize())


def test_local_forbidden_headers_are_usage_errors():
    c = SpdyProtocol(client=True)
    with pytest.raises(SpdyUsageError):
        c.open_stream({"Host": "x"})


def test_too_many_streams():
    c = SpdyProtocol(client=True)
    s = SpdyProtocol(client=False, limits=SpdyLimits(max_streams=3))
    for _ in range(3):
        c.open_stream({})
    pump(c, s)
    c.reset_stream(1)
    c.open_stream({})
    pump(c, s)  # one was reset: still three open
    sid = c.open_stream({})
    # Refused with RST_STREAM REFUSED_STREAM; the connection lives on.
    assert s.receive_data(c.data_to_send()) == []
    assert fr.parse_frames(s.data_to_send()) == [
        fr.RstStreamFrame(sid, fr.RstStatus.REFUSED_STREAM)
    ]
    assert sid not in s.open_streams and len(s.open_streams) == 3
    events = c.receive_data(fr.RstStreamFrame(sid, fr.RstStatus.REFUSED_STREAM).serialize())
    assert events == [StreamReset(sid, fr.RstStatus.REFUSED_STREAM)]
    c.reset_stream(3)
    pump(c, s)
    sid = c.open_stream({})
    assert [type(e) for e in s.receive_data(c.data_to_send())] == [StreamOpened]


def test_header_limits_through_the_connection():
    comp = HeaderCompressor()
    s = SpdyProtocol(client=False, limits=SpdyLimits(max_header_block=1024, max_headers=4))
    with pytest.raises(LimitExceededError):
        s.receive_data(fr.SynStreamFrame(1, comp.encode({"x": "a" * 5000})).serialize())
    s = SpdyProtocol(client=False, limits=SpdyLimits(max_headers=4))
    with pytest.raises(LimitExceededError):
        s.receive_data(
            fr.SynStreamFrame(
                1, HeaderCompressor().encode({f"h{i}": "" for i in range(5)})
            ).serialize()
        )


def test_oversize_frames():
    s = SpdyProtocol(client=False, limits=SpdyLimits(max_data_length=100, max_control_length=50))
    with pytest.raises(LimitExceededError):
        s.receive_data(fr.data_header(1, 101))
    s = SpdyProtocol(client=False, limits=SpdyLimits(max_control_length=50))
    with pytest.raises(LimitExceededError):
        s.receive_data(fr.SynStreamFrame(1, bytes(60)).serialize()[:8])


@given(st.binary(max_size=300))
def test_random_input_only_protocol_errors(data):
    s = SpdyProtocol(client=False, limits=SpdyLimits(max_data_length=200, max_control_length=200))
    try:
        s.receive_data(data)
    except ProtocolError:
        pass


# -- the tables, pair by pair -----------------------------------------------------------
LOCAL = {I.SEND_REPLY, I.SEND_REPLY_FIN, I.SEND_DATA, I.SEND_FIN, I.SEND_RST}


@given(st.sampled_from(list(StreamState)), st.sampled_from(list(StreamInput)))
def test_stream_table_lookup(state, event):
    listed = STREAM_TRANSITIONS.get((state, event))
    if listed is not None:
        assert next_stream_state(state, event) == listed
    elif event in LOCAL:
        with pytest.raises(SpdyUsageError):
            next_stream_state(state, event)
    else:
        with pytest.raises(StreamError):
            next_stream_state(state, event)


def in_state(state: StreamState) -> tuple[SpdyProtocol, SpdyProtocol, int]:
    """(protocol under test, its peer, stream id) with the stream in ``state``."""
    c, s = pair()
    if state in (S.SYN_SENT, S.SYN_SENT_FIN):
        sid = c.open_stream({}, fin=state is S.SYN_SENT_FIN)
        s.receive_data(c.data_to_send())
        return c, s, sid
    sid = c.open_stream({}, fin=state is S.SYN_RECEIVED_FIN)
    s.receive_data(c.data_to_send())
    if state in (S.SYN_RECEIVED, S.SYN_RECEIVED_FIN):
        return s, c, sid
    s.reply(sid)
    c.receive_data(s.data_to_send())
    if state is S.HALF_CLOSED_LOCAL:
        s.send_data(sid, b"", fin=True)
        c.receive_data(s.data_to_send())
    elif state is S.HALF_CLOSED_REMOTE:
        c.send_data(sid, b"", fin=True)
        s.receive_data(c.data_to_send())
    elif state is S.CLOSED:
        s.reset_stream(sid)
        c.receive_data(s.data_to_send())
    assert s.stream_state(sid) is state
    return s, c, sid


def apply(proto: SpdyProtocol, peer: SpdyProtocol, sid: int, event: StreamInput) -> list:
    if event in (I.SEND_REPLY, I.SEND_REPLY_FIN):
        proto.reply(sid, fin=event is I.SEND_REPLY_FIN)
    elif event in (I.SEND_DATA, I.SEND_FIN):
        proto.send_data(sid, b"x" if event is I.SEND_DATA else b"", fin=event is I.SEND_FIN)
    elif event is I.SEND_RST:
        proto.reset_stream(sid)
    else:
        frame = {
            I.RECV_REPLY: lambda: fr.SynReplyFrame(sid, peer._compressor.encode({})),
            I.RECV_REPLY_FIN: lambda: fr.SynReplyFrame(
                sid, peer._compressor.encode({}), fr.FLAG_FIN
            ),
            I.RECV_DATA: lambda: fr.DataFrame(sid, b"x"),
            I.RECV_FIN: lambda: fr.DataFrame(sid, b"", True),
            I.RECV_RST: lambda: fr.RstStreamFrame(sid, fr.RstStatus.CANCEL),
        }[event]()
        return proto.receive_data(frame.serialize())
    return []


@settings(max_examples=200)
@given(st.sampled_from(list(StreamState)), st.sampled_from(list(StreamInput)))
def test_stream_table_drives_the_protocol(state, event):
    proto, peer, sid = in_state(state)
    listed = STREAM_TRANSITIONS.get((state, event))
    if state is S.CLOSED:  # forgotten: local actions refused or no-ops, remote ignored
        if event in (I.SEND_REPLY, I.SEND_REPLY_FIN, I.SEND_DATA, I.SEND_FIN):
            with pytest.raises(SpdyUsageError):
                apply(proto, peer, sid, event)
        else:
            assert apply(proto, peer, sid, event) == []
        return
    if listed is None and event in LOCAL:
        with pytest.raises(SpdyUsageError):
            apply(proto, peer, sid, event)
        assert proto.stream_state(sid) is state
        return
    events = apply(proto, peer, sid, event)
    if listed is None:  # a remote input the state forbids: stream reset by us
        assert isinstance(events[-1], StreamReset) and not events[-1].remote
        assert proto.stream_state(sid) is S.CLOSED
    elif listed == DISCARD:
        assert events == [] and proto.stream_state(sid) is state
    else:
        assert proto.stream_state(sid) is listed


@given(st.sampled_from(list(ConnectionState)), st.sampled_from(list(ConnectionInput)))
def test_connection_table(state, event):
    listed = CONNECTION_TRANSITIONS.get((state, event))
    if listed is not None:
        assert next_connection_state(state, event) is listed
    else:
        with pytest.raises((ProtocolError, SpdyUsageError)):
            next_connection_state(state, event)


ops = st.lists(
    st.tuples(
        st.sampled_from(["open", "reply", "data", "fin", "rst", "ping", "goaway", "deliver"]),
        st.booleans(),
        st.integers(0, 5),
    ),
    max_size=40,
)


@settings(max_examples=150)
@given(ops)
def test_random_operations_keep_both_sides_consistent(steps):
    sides = pair()
    allowed = {1, 2, 3, 4, 6, 7, 8, 9}
    for op, which, k in steps:
        me, other = sides if which else sides[::-1]
        sids = sorted(set(me.open_streams)) or [1]
        sid = sids[k % len(sids)]
        try:
            if op == "open":
                me.open_stream({"streamtype": f"s{k}"}, fin=k == 0)
            elif op == "reply":
                me.reply(sid)
            elif op in ("data", "fin"):
                me.send_data(sid, b"d" * k, fin=op == "fin")
            elif op == "rst":
                me.reset_stream(sid)
            elif op == "ping":
                me.ping()
            elif op == "goaway":
                me.goaway()
        except SpdyUsageError:
            pass
        if op == "deliver":
            out = me.data_to_send()
            for frame in frames_of(out):
                if not isinstance(frame, fr.DataFrame):
                    assert (
                        frame.serialize()[2:4] != b""
                        and fr.FrameType(int.from_bytes(frame.serialize()[2:4], "big")) in allowed
                    )
            other.receive_data(out)  # never a ProtocolError between two correct sides

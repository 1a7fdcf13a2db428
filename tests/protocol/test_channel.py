"""Channel protocols: capability table, negotiation, message codec, Status and resize JSON."""

from __future__ import annotations

import base64
import pathlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from hatchway.errors import HandshakeError, LimitExceededError, ProtocolError
from hatchway.protocol import channel as ch

DATA = pathlib.Path(__file__).parent / "data"


def load(name: str) -> dict[str, bytes]:
    """``name = hex  # meaning`` lines of a vector file."""
    out: dict[str, bytes] = {}
    for line in (DATA / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, rest = line.partition(" = ")
        out[key.strip()] = bytes.fromhex(rest.split("  #", 1)[0])
    return out


FRAMES = load("ws_frames.txt")
STATUS = load("ws_status.txt")
B64 = load("ws_base64.txt")
RESIZE = load("ws_resize.txt")
ALL_VERSIONS = sorted(ch.VERSIONS)


# -- capability table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status_json", "resize", "close_signal", "b64", "waits"),
    [
        ("channel.k8s.io", False, False, False, False, False),
        ("v2.channel.k8s.io", False, False, False, False, True),
        ("v3.channel.k8s.io", False, True, False, False, True),
        ("v4.channel.k8s.io", True, True, False, False, True),
        ("v5.channel.k8s.io", True, True, True, False, True),
        ("base64.channel.k8s.io", False, False, False, True, False),
        ("v4.base64.channel.k8s.io", True, True, False, True, True),
        ("", False, False, False, False, False),
    ],
)
def test_capabilities(name, status_json, resize, close_signal, b64, waits):
    c = ch.capabilities(name)
    assert (c.status_json, c.resize, c.close_signal, c.base64, c.client_waits_for_error_eof) == (
        status_json,
        resize,
        close_signal,
        b64,
        waits,
    )


def test_unknown_version():
    with pytest.raises(ProtocolError):
        ch.capabilities("v9.channel.k8s.io")


def test_channel_numbers():
    assert ch.CHANNEL_BY_NAME == {"stdin": 0, "stdout": 1, "stderr": 2, "error": 3, "resize": 4}
    assert ch.CLOSE_SIGNAL == 255


# -- negotiation ------------------------------------------------------------------------


def test_spdy_negotiation_client_preference_wins():
    server = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]
    values = ["v5.channel.k8s.io", "v3.channel.k8s.io", "v4.channel.k8s.io"]
    assert ch.negotiate_spdy(values, server) == "v3.channel.k8s.io"
    assert ch.negotiate_spdy(["v5.channel.k8s.io , v4.channel.k8s.io,"], server) == (
        "v4.channel.k8s.io"
    )


def test_spdy_negotiation_required():
    with pytest.raises(ch.NegotiationError) as info:
        ch.negotiate_spdy([" , "], ["v4.channel.k8s.io"])
    assert info.value.status == 400
    assert str(info.value) == "unable to upgrade: X-Stream-Protocol-Version is required"
    assert isinstance(info.value, HandshakeError)


def test_spdy_negotiation_refused():
    with pytest.raises(ch.NegotiationError) as info:
        ch.negotiate_spdy(["v9.channel.k8s.io", "x"], ["v4.channel.k8s.io", "channel.k8s.io"])
    err = info.value
    assert err.status == 403
    text = (
        "unable to upgrade: unable to negotiate protocol: client supports "
        "[v9.channel.k8s.io x], server accepts [v4.channel.k8s.io channel.k8s.io]"
    )
    assert str(err) == text
    assert err.body == text.encode() + b"\n"
    accepted = [v for k, v in err.headers if k == "X-Accepted-Stream-Protocol-Versions"]
    assert accepted == ["v4.channel.k8s.io", "channel.k8s.io"]


def test_websocket_negotiation():
    kubelet = ch.WEBSOCKET_SERVER_PROTOCOLS
    assert ch.negotiate_websocket(None, kubelet) == ""
    assert ch.negotiate_websocket("  ", kubelet) == ""
    assert ch.negotiate_websocket("v5.channel.k8s.io,v4.channel.k8s.io", kubelet) == (
        "v5.channel.k8s.io"
    )
    assert ch.negotiate_websocket(
        "v5.channel.k8s.io, v4.channel.k8s.io", ["v4.channel.k8s.io"]
    ) == ("v4.channel.k8s.io")
    with pytest.raises(ch.NegotiationError) as info:
        ch.negotiate_websocket("v5.channel.k8s.io", ["v4.channel.k8s.io"])
    assert info.value.status == 403 and info.value.body == b""
    assert ch.websocket_protocols_header(["v5.channel.k8s.io", "v4.channel.k8s.io"]) == (
        "v5.channel.k8s.io, v4.channel.k8s.io"
    )


# -- message codec: the captured vectors ------------------------------------------------


def _parse_frames(raw: bytes, side: Side) -> list[Frame]:
    proto = Protocol(side, max_size=1 << 20)
    proto.receive_data(raw)
    return proto.events_received()


def test_captured_server_frames_decode():
    v5 = ch.V5
    (frame,) = _parse_frames(FRAMES["s_initial_empty_stdout"], Side.CLIENT)
    assert frame.opcode is Opcode.BINARY
    assert ch.decode_message(v5, frame.data) == (1, b"")
    (frame,) = _parse_frames(FRAMES["s_stdout_hello"], Side.CLIENT)
    assert ch.decode_message(v5, frame.data) == (1, b"hello\n")
    (frame,) = _parse_frames(FRAMES["s_success_status"], Side.CLIENT)
    assert ch.decode_message(v5, frame.data) == (3, STATUS["success"])


def test_captured_client_frames_decode():
    (frame,) = _parse_frames(FRAMES["c_stdin_foobar"], Side.SERVER)
    assert frame.data == FRAMES["c_stdin_foobar_payload"]
    assert ch.decode_message(ch.V5, frame.data) == (0, b"foo\nbar\n")
    (frame,) = _parse_frames(FRAMES["c_close_stdin"], Side.SERVER)
    assert frame.data == FRAMES["c_close_stdin_payload"]
    assert ch.decode_message(ch.V5, frame.data) == (ch.CLOSE_SIGNAL, b"\x00")
    assert ch.encode_close_signal(0) == FRAMES["c_close_stdin_payload"]


def _server_frame(payload: bytes) -> bytes:
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


def test_encode_matches_captured_server_frames():
    v5 = ch.V5
    assert _server_frame(ch.encode_message(v5, 1, b"")) == FRAMES["s_initial_empty_stdout"]
    assert _server_frame(ch.encode_message(v5, 1, b"hello\n")) == FRAMES["s_stdout_hello"]
    assert (
        _server_frame(ch.encode_message(v5, 3, ch.status_success())) == (FRAMES["s_success_status"])
    )
    exit7 = ch.encode_message(v5, 3, STATUS["exit7_kubelet"])
    assert _server_frame(exit7).startswith(FRAMES["s_exit7_status_prefix"])


def test_base64_vectors():
    b64 = ch.BASE64_V1
    assert ch.encode_message(b64, 0, b"foo\n") == B64["stdin_foo"].decode()
    assert ch.encode_message(b64, 1, b"\n") == B64["stdout_newline"].decode()
    assert ch.encode_message(ch.BASE64_V4, 1, b"") == B64["initial_stdout"].decode()
    assert ch.decode_message(b64, B64["stdin_foo"].decode()) == (0, b"foo\n")
    assert ch.decode_message(b64, B64["stdin_foo"]) == (0, b"foo\n")  # binary frame too
    assert ch.decode_message(b64, B64["comment_trap"].decode()) == (0, b"foo\n\n")
    assert ch.decode_message(ch.BASE64_V4, "1") == (1, b"")


def test_binary_protocol_accepts_text_messages():
    # The Python client sends str data as text frames whose first character is the channel.
    assert ch.decode_message(ch.V4, "\x00abc\n") == (0, b"abc\n")
    assert ch.decode_message(ch.V1, b"\x02") == (2, b"")


def test_unknown_channel_is_returned_for_discarding():
    assert ch.decode_message(ch.V5, b"\x07zz") == (7, b"zz")
    # 0xFF is only a close signal on v5; elsewhere it is an unknown channel.
    assert ch.decode_message(ch.V4, b"\xff\x00\x01") == (255, b"\x00\x01")


@given(
    version=st.sampled_from(ALL_VERSIONS),
    channel=st.integers(0, 4),
    data=st.binary(max_size=2048),
)
def test_roundtrip_every_version(version, channel, data):
    msg = ch.encode_message(version, channel, data)
    assert isinstance(msg, str) == ch.capabilities(version).base64
    assert ch.decode_message(version, msg) == (channel, data)


@given(channel=st.integers(0, 254), data=st.binary(max_size=512))
def test_roundtrip_binary_all_channels(channel, data):
    assert ch.decode_message(ch.V4, ch.encode_message(ch.V4, channel, data)) == (channel, data)


# -- hostile input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "payload"),
    [
        (ch.V5, b""),
        (ch.V5, b"\xff"),  # close signal, too short
        (ch.V5, b"\xff\x00\x00"),  # close signal, too long
        (ch.V5, b"\xff\x05"),  # close signal for channel >= 5
        (ch.V5, b"\xff\xff"),
        (ch.BASE64_V1, "0Zm9v!!=="),  # bad base64
        (ch.BASE64_V1, "0Zm9vC"),  # bad padding
        (ch.BASE64_V4, "xZm9v"),  # channel not a digit
        (ch.BASE64_V4, ""),
        (ch.BASE64_V4, b"\x80abc"),
    ],
)
def test_hostile_messages(version, payload):
    with pytest.raises(ProtocolError):
        ch.decode_message(version, payload)


@given(st.binary(max_size=64))
def test_decode_never_crashes(payload):
    for version in ALL_VERSIONS:
        try:
            ch.decode_message(version, payload)
        except ProtocolError:
            pass


# -- Status JSON ------------------------------------------------------------------------


def test_status_shapes_byte_exact():
    assert ch.status_success() == STATUS["success"]
    kubelet_msg = (
        "command terminated with non-zero exit code: "
        "error executing command [sh -c exit 7], exit code 7"
    )
    assert ch.status_exit_code(7, kubelet_msg) == STATUS["exit7_kubelet"]
    translator_msg = (
        "command terminated with non-zero exit code: command terminated with exit code 7"
    )
    assert ch.status_exit_code(7, translator_msg) == STATUS["exit7_translator"]
    err = 'unable to upgrade connection: container not found ("main")'
    assert ch.status_internal_error(err) == STATUS["internal_container_not_found"]


def test_status_go_html_escapes():
    assert ch.status_internal_error("a<b>&c") == (
        b'{"metadata":{},"status":"Failure","message":"Internal error occurred: '
        b'a\\u003cb\\u003e\\u0026c","reason":"InternalError","details":{"causes":'
        b'[{"message":"a\\u003cb\\u003e\\u0026c"}]},"code":500}'
    )


@pytest.mark.parametrize("version", [ch.V4, ch.V5, ch.BASE64_V4])
def test_parse_status_v4(version):
    assert ch.parse_status(version, b"").exit_code == 0
    assert ch.parse_status(version, STATUS["success"]).success
    out = ch.parse_status(version, STATUS["exit7_kubelet"])
    assert (out.exit_code, out.message) == (7, "command terminated with exit code 7")
    out = ch.parse_status(version, STATUS["exit7_translator"])
    assert out.exit_code == 7 and out.reason == "NonZeroExitCode"
    out = ch.parse_status(version, STATUS["internal_container_not_found"])
    assert out.exit_code is None
    assert out.message == (
        'Internal error occurred: unable to upgrade connection: container not found ("main")'
    )
    assert out.reason == "InternalError"


def test_parse_status_exit_code_cause_not_first_and_edges():
    raw = (
        b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":'
        b'[{"message":"x"},{"reason":"ExitCode","message":"255"}]}}'
    )
    assert ch.parse_status(ch.V5, raw).exit_code == 255
    assert ch.parse_status(ch.V5, _exit_status("007")).exit_code == 7


def _exit_status(cause_message: str) -> bytes:
    return (
        b'{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":'
        b'[{"reason":"ExitCode","message":"' + cause_message.encode() + b'"}]}}'
    )


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (_exit_status("300"), 'error stream protocol error: invalid exit code value "300"'),
        (_exit_status("-1"), 'error stream protocol error: invalid exit code value "-1"'),
        (_exit_status(" 7"), 'error stream protocol error: invalid exit code value " 7"'),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[]}}',
            "error stream protocol error: no ExitCode cause given",
        ),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode","details":{}}',
            "error stream protocol error: no ExitCode cause given",
        ),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode"}',
            "error stream protocol error: details must be set",
        ),
        (b'{"status":"Weird"}', "error stream protocol error: unknown error"),
        (b"{}", "error stream protocol error: unknown error"),
        (
            b"not json",
            "error stream protocol error: invalid character 'n' looking for beginning of value"
            ' in "not json"',
        ),
        (
            b'{"status":',
            'error stream protocol error: unexpected end of JSON input in "{\\"status\\":"',
        ),
    ],
)
def test_parse_status_protocol_errors(raw, text):
    with pytest.raises(ch.StatusProtocolError) as info:
        ch.parse_status(ch.V5, raw)
    assert str(info.value) == text
    assert isinstance(info.value, ProtocolError)


def test_parse_status_failure_message_is_the_error():
    raw = b'{"metadata":{},"status":"Failure","message":"boom","reason":"Forbidden"}'
    out = ch.parse_status(ch.V4, raw)
    assert (out.exit_code, out.message, out.reason) == (None, "boom", "Forbidden")


def test_parse_status_plain_text_versions():
    text = (
        b"command terminated with non-zero exit code: "
        b"error executing command [sh -c exit 3], exit code 3"
    )
    for version in (ch.V2, ch.V3):
        out = ch.parse_status(version, text)
        assert out.exit_code is None
        # kubectl prints "error: " + this (protocol.md 7 row 13)
        assert out.message == "error executing remote command: " + text.decode()
        assert ch.parse_status(version, b"").exit_code == 0
    out = ch.parse_status(ch.V1, b"boom")
    assert out.message == "Error executing remote command: boom"
    # row 14: v1 with an exit status that never reached the error stream is success
    assert ch.parse_status(ch.V1, b"").success
    assert ch.parse_status(ch.BASE64_V1, b"").success


@given(st.integers(0, 255))
def test_exit_code_roundtrip(code):
    raw = ch.status_exit_code(code, f"command terminated with exit code {code}")
    assert ch.parse_status(ch.V5, raw).exit_code == code


@given(st.binary(max_size=200))
def test_parse_status_never_crashes(raw):
    try:
        ch.parse_status(ch.V4, raw)
    except ProtocolError:
        pass


# -- resize -----------------------------------------------------------------------------


def test_encode_resize_vector():
    assert ch.encode_resize(100, 30) == RESIZE["resize_100x30"]
    assert (
        ch.encode_message(ch.V5, ch.RESIZE, ch.encode_resize(100, 30))
        == (RESIZE["resize_100x30_message"])
    )
    with pytest.raises(ValueError):
        ch.encode_resize(70000, 1)


STREAM = (
    RESIZE["resize_100x30"]
    + b'{"Width":101,"Height":31}{"width":80,"HEIGHT":24}  \r\n\t{ "Height" : 1 , "Width" : 2 }'
    + b'{"Width":65535,"Height":0,"Extra":"}{\\"x"}\n'
)
EXPECTED = [(100, 30), (101, 31), (80, 24), (2, 1), (65535, 0)]


def test_resize_decoder_whole_and_bytewise():
    assert ch.ResizeDecoder().feed(STREAM) == EXPECTED
    dec = ch.ResizeDecoder()
    got = []
    for i in range(len(STREAM)):
        got += dec.feed(STREAM[i : i + 1])
    assert got == EXPECTED


@given(st.lists(st.integers(1, 40), max_size=30))
def test_resize_decoder_random_chunks(cuts):
    dec = ch.ResizeDecoder()
    got = []
    pos = 0
    for c in cuts:
        got += dec.feed(STREAM[pos : pos + c])
        pos += c
    got += dec.feed(STREAM[pos:])
    assert got == EXPECTED


def test_resize_decoder_random_chunks_seeded():
    rnd = random.Random(7)
    for _ in range(50):
        dec, got, pos = ch.ResizeDecoder(), [], 0
        while pos < len(STREAM):
            n = rnd.randint(1, 30)
            got += dec.feed(STREAM[pos : pos + n])
            pos += n
        assert got == EXPECTED


@pytest.mark.parametrize(
    "payload",
    [
        b'{"Width":70000,"Height":1}',
        b'{"Width":-1,"Height":1}',
        b'{"Width":1.5,"Height":1}',
        b'{"Width":"80","Height":1}',
        b"[1,2]",
        b"42",
        b'{"Width":1,,}',
        b'{"Width":true,"Height":1}',
    ],
)
def test_resize_decoder_rejects(payload):
    with pytest.raises(ProtocolError):
        ch.ResizeDecoder().feed(payload)


def test_resize_decoder_bounded():
    dec = ch.ResizeDecoder()
    with pytest.raises(LimitExceededError):
        dec.feed(b'{"Width":1,"Pad":"' + b"x" * 2000)
    dec = ch.ResizeDecoder()
    dec.feed(b'{"Width":1,"Pad":"' + b"x" * 900)
    with pytest.raises(LimitExceededError):
        for _ in range(200):
            dec.feed(b"x")


def test_resize_missing_keys_are_zero():
    assert ch.ResizeDecoder().feed(b'{"Width":5}') == [(5, 0)]


def test_base64_stdlib_agrees():
    # Guard against a codec that only round-trips with itself.
    msg = ch.encode_message(ch.BASE64_V4, 2, b"\x00\xff binary")
    assert msg == "2" + base64.b64encode(b"\x00\xff binary").decode()


def test_the_node_prefers_v4_over_spdy_when_it_is_offered():
    # The kubelet's choice for kubectl is v4 (protocol.md 3.1); v5 only for a client without v4.
    everything = [", ".join(ch.SPDY_CLIENT_PROTOCOLS)]
    supported = ch.spdy_server_supported(everything)
    assert ch.negotiate_spdy(everything, supported) == ch.V4
    assert ch.negotiate_spdy([ch.V5], ch.spdy_server_supported([ch.V5])) == ch.V5
    assert ch.spdy_server_supported(["v9.channel.k8s.io"]) == ch.SPDY_SERVER_PROTOCOLS

"""Upgrade handshake rules (protocol.md 3.1, 5.1, 5.2)."""

from __future__ import annotations

import json
import pathlib

import pytest

from hatchway.errors import HandshakeError
from hatchway.protocol import channel as ch
from hatchway.protocol import handshake as hs

DATA = pathlib.Path(__file__).parent / "data"


def accept_vectors() -> list[tuple[str, str]]:
    out = []
    for line in (DATA / "ws_accept.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, rest = line.partition(" = ")
            out.append((key.strip(), rest.split("  #", 1)[0].strip()))
    return out


KUBECTL_WS = [
    ("Host", "127.0.0.1:18443"),
    ("User-Agent", "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07"),
    ("Authorization", "Bearer test-token-123"),
    ("Connection", "Upgrade"),
    ("Kubectl-Command", "kubectl exec"),
    ("Sec-WebSocket-Key", "4JkKNkNS8PnqUSjwxXgxmw=="),
    ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ("Sec-WebSocket-Version", "13"),
    ("Upgrade", "websocket"),
]
PYTHON_WS = [
    (b"upgrade", b"websocket"),
    (b"host", b"127.0.0.1:18443"),
    (b"origin", b"http://127.0.0.1:18443"),
    (b"sec-websocket-key", b"8fUgdWG/KBqE+htVGzrN3w=="),
    (b"sec-websocket-version", b"13"),
    (b"connection", b"Upgrade"),
    (b"authorization", b"Bearer test-token-123"),
    (b"sec-websocket-protocol", b"v5.channel.k8s.io,v4.channel.k8s.io"),
]
KUBECTL_SPDY = [
    ("Host", "127.0.0.1:18443"),
    ("Content-Length", "0"),
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "v5.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "v2.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "channel.k8s.io"),
]


@pytest.mark.parametrize(("key", "accept"), accept_vectors())
def test_websocket_accept_vectors(key, accept):
    assert hs.websocket_accept(key) == accept


def test_accept_vectors_present():
    assert len(accept_vectors()) == 2


def test_is_upgrade_request():
    assert hs.is_upgrade_request({"Connection": "Upgrade"})
    assert hs.is_upgrade_request([(b"connection", b"keep-alive, UPGRADE")])
    assert not hs.is_upgrade_request({"Connection": "keep-alive"})
    assert not hs.is_upgrade_request({"Upgrade": "websocket"})


# -- WebSocket server side --------------------------------------------------------------


def test_check_websocket_request_accepts_kubectl_and_python():
    assert hs.check_websocket_request("GET", KUBECTL_WS) == "4JkKNkNS8PnqUSjwxXgxmw=="
    assert hs.check_websocket_request("GET", PYTHON_WS) == "8fUgdWG/KBqE+htVGzrN3w=="


def _without(headers, name):
    return [(k, v) for k, v in headers if k.lower() != name.lower()]


def _with(headers, name, value):
    return [*_without(headers, name), (name, value)]


@pytest.mark.parametrize(
    ("method", "headers", "status", "body", "raw"),
    [
        (
            "POST",
            KUBECTL_WS,
            405,
            b"bad method",
            b"HTTP/1.1 405 Method Not Allowed\r\n\r\nbad method",
        ),
        (
            "GET",
            _with(KUBECTL_WS, "Upgrade", "h2c"),
            400,
            b"not websocket protocol",
            b"HTTP/1.1 400 Bad Request\r\n\r\nnot websocket protocol",
        ),
        (
            "GET",
            _with(KUBECTL_WS, "Connection", "keep-alive"),
            400,
            b"not websocket protocol",
            None,
        ),
        (
            "GET",
            _without(KUBECTL_WS, "Sec-WebSocket-Key"),
            400,
            b"mismatch challenge/response",
            b"HTTP/1.1 400 Bad Request\r\n\r\nmismatch challenge/response",
        ),
        (
            "GET",
            _with(KUBECTL_WS, "Sec-WebSocket-Version", "12"),
            400,
            b"missing or bad WebSocket Version",
            b"HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n"
            b"missing or bad WebSocket Version",
        ),
    ],
)
def test_check_websocket_request_refusals(method, headers, status, body, raw):
    with pytest.raises(hs.HandshakeRefusedError) as info:
        hs.check_websocket_request(method, headers)
    err = info.value
    assert (err.status, err.body) == (status, body)
    if raw is not None:
        assert err.raw == raw
    assert isinstance(err, HandshakeError)


def test_websocket_subprotocol_refusal_is_bare_403():
    with pytest.raises(hs.HandshakeRefusedError) as info:
        hs.negotiate_websocket_request(KUBECTL_WS, ["v4.channel.k8s.io"])
    assert info.value.raw == b"HTTP/1.1 403 Forbidden\r\n\r\n"
    assert hs.negotiate_websocket_request(PYTHON_WS, ["v4.channel.k8s.io"]) == "v4.channel.k8s.io"
    assert hs.negotiate_websocket_request([], ch.WEBSOCKET_SERVER_PROTOCOLS) == ""


def test_websocket_response_bytes_exact():
    raw = hs.websocket_response_bytes("dGhlIHNhbXBsZSBub25jZQ==", "v5.channel.k8s.io")
    assert raw == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
        b"\r\n"
    )
    raw = hs.websocket_response_bytes("dGhlIHNhbXBsZSBub25jZQ==", "")
    assert b"Sec-WebSocket-Protocol" not in raw


def test_websocket_request_headers_like_kubectl():
    headers = hs.websocket_request_headers("4JkKNkNS8PnqUSjwxXgxmw==", ["v5.channel.k8s.io"])
    assert headers == [
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "4JkKNkNS8PnqUSjwxXgxmw=="),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
        ("Sec-WebSocket-Version", "13"),
        ("Upgrade", "websocket"),
    ]
    assert [h for h in KUBECTL_WS if h[0] in dict(headers)] == headers
    key = hs.new_websocket_key()
    assert len(key) == 24 and key != hs.new_websocket_key()


# -- WebSocket client side --------------------------------------------------------------


def _ws_101(key, protocol="v5.channel.k8s.io"):
    return hs.websocket_response_headers(key, protocol)


def test_check_websocket_response_ok():
    key = "4JkKNkNS8PnqUSjwxXgxmw=="
    offered = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
    assert hs.check_websocket_response(101, _ws_101(key), key, offered) == "v5.channel.k8s.io"
    lower = [(k.lower().encode(), v.encode()) for k, v in _ws_101(key, "v4.channel.k8s.io")]
    assert hs.check_websocket_response(101, lower, key, offered) == "v4.channel.k8s.io"


def test_check_websocket_response_missing_subprotocol_is_upgrade_failure():
    key = "4JkKNkNS8PnqUSjwxXgxmw=="
    with pytest.raises(hs.UpgradeFailedError) as info:
        hs.check_websocket_response(101, _ws_101(key, ""), key, ["v5.channel.k8s.io"])
    assert str(info.value) == 'invalid protocol, expected one of ["v5.channel.k8s.io"], got ""'
    with pytest.raises(hs.UpgradeFailedError):
        hs.check_websocket_response(
            101, _ws_101(key, "v4.channel.k8s.io"), key, ["v5.channel.k8s.io"]
        )


def test_check_websocket_response_bad_accept_and_tokens():
    key = "4JkKNkNS8PnqUSjwxXgxmw=="
    with pytest.raises(hs.UpgradeFailedError):
        hs.check_websocket_response(
            101, _ws_101("AAAAAAAAAAAAAAAAAAAAAA=="), key, ["v5.channel.k8s.io"]
        )
    bad = [(k, "h2c" if k == "Upgrade" else v) for k, v in _ws_101(key)]
    with pytest.raises(hs.UpgradeFailedError):
        hs.check_websocket_response(101, bad, key, ["v5.channel.k8s.io"])


def test_non_101_with_status_body():
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "container bogus is not valid for pod mypod",
        "reason": "BadRequest",
        "code": 400,
    }
    body = json.dumps(status).encode()
    with pytest.raises(hs.UpgradeFailedError) as info:
        hs.check_websocket_response(400, [("Content-Type", "application/json")], "k", ["x"], body)
    assert info.value.api_status == status
    assert info.value.status == 400
    assert str(info.value) == "container bogus is not valid for pod mypod"


def test_non_101_plain_body():
    with pytest.raises(hs.UpgradeFailedError) as info:
        hs.check_spdy_response(500, [], b'container not found ("main")\n')
    assert str(info.value) == 'unable to upgrade connection: container not found ("main")'
    assert info.value.api_status is None
    with pytest.raises(hs.UpgradeFailedError) as info:
        hs.check_websocket_response(403, [], "k", ["v5.channel.k8s.io"], b"")
    assert info.value.status == 403


# -- SPDY -------------------------------------------------------------------------------


def test_check_spdy_request_negotiates_like_the_kubelet():
    server = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]
    assert hs.check_spdy_request(KUBECTL_SPDY, server) == "v4.channel.k8s.io"
    assert hs.check_spdy_request(KUBECTL_SPDY) == ""


def test_check_spdy_request_refusals():
    with pytest.raises(ch.NegotiationError) as info:
        hs.check_spdy_request(
            _without(KUBECTL_SPDY, "X-Stream-Protocol-Version"), ["v4.channel.k8s.io"]
        )
    assert info.value.status == 400
    with pytest.raises(hs.HandshakeRefusedError) as info2:
        hs.check_spdy_request([("Connection", "Upgrade"), ("Upgrade", "websocket")])
    err = info2.value
    assert err.status == 400
    assert str(err) == (
        "unable to upgrade: missing upgrade headers in request: "
        'http.Header{"Connection":[]string{"Upgrade"}, "Upgrade":[]string{"websocket"}}'
    )
    assert err.body.endswith(b"\n")


def test_spdy_headers():
    assert hs.spdy_request_headers(ch.SPDY_CLIENT_PROTOCOLS) == [
        h for h in KUBECTL_SPDY if h[0] in ("Connection", "Upgrade", "X-Stream-Protocol-Version")
    ]
    assert hs.spdy_response_bytes("v4.channel.k8s.io", "Sat, 28 Nov 2026 11:02:48 GMT") == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Connection: Upgrade\r\n"
        b"Upgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        b"Date: Sat, 28 Nov 2026 11:02:48 GMT\r\n"
        b"\r\n"
    )


def test_check_spdy_response():
    ok = hs.spdy_response_headers("v4.channel.k8s.io")
    assert hs.check_spdy_response(101, ok) == "v4.channel.k8s.io"
    # Missing version header: silently the unversioned protocol (protocol.md 3.1; 7 row 14).
    assert hs.check_spdy_response(101, hs.spdy_response_headers("")) == "channel.k8s.io"
    with pytest.raises(hs.UpgradeFailedError):
        hs.check_spdy_response(101, [("Connection", "Upgrade"), ("Upgrade", "websocket")])
    with pytest.raises(hs.UpgradeFailedError) as info:
        hs.check_spdy_response(
            403,
            [],
            b"unable to upgrade: unable to negotiate protocol: client supports [v9], "
            b"server accepts [v4.channel.k8s.io]\n",
        )
    assert str(info.value) == (
        "unable to upgrade connection: unable to upgrade: unable to negotiate protocol: "
        "client supports [v9], server accepts [v4.channel.k8s.io]"
    )


def test_a_refusal_without_a_body_reads_its_reason():
    with pytest.raises(hs.UpgradeFailedError) as info:
        hs.check_websocket_response(403, [], "k", ["v5.channel.k8s.io"], b"", "Forbidden")
    assert str(info.value) == "unable to upgrade connection: Forbidden"
    with pytest.raises(hs.UpgradeFailedError) as info:
        hs.check_spdy_response(403, [], b"no\n", "Forbidden")
    assert str(info.value) == "unable to upgrade connection: no"


def test_nested_brackets_are_no_status():
    # A peer's body: json.loads raised RecursionError out of check_*_response.
    body = b"[" * 60000
    with pytest.raises(hs.UpgradeFailedError) as info:
        hs.check_spdy_response(500, [], body)
    assert info.value.api_status is None
    assert info.value.body == body

"""``pods/portforward`` through the API server over real TLS, against the fake node of
test_proxy.py (protocol.md 6.3-6.6): the node's target, validation before dialing, RBAC
``create`` on every method, exec admission, the audit lines with the ports, and the
WebSocket tunnel terminated in front of a SPDY node."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from apiserver import test_proxy
from apiserver.support import serve_node
from apiserver.test_proxy import (
    PODS,
    SCALE,
    WEBSOCKET,
    Client,
    FakeNode,
    _bind,
    _echo_roundtrip,
    _pod,
    _status,
)
from hatchway.transport import http

PF_SPDY = [
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "portforward.k8s.io"),
]
TUNNEL = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Protocol", "SPDY/3.1+portforward.k8s.io"),
]


#: test_proxy's fixtures: an API server (dialling ``node``, overridden below) and its data.
api = test_proxy.api
data_dir = test_proxy.data_dir


@dataclass
class PortForwardNode(FakeNode):
    """Answers port-forward upgrades as a SPDY node does (``portforward.k8s.io``)."""

    protocol: str = "portforward.k8s.io"

    async def app(self, request: http.Request) -> http.Response:
        if not request.path.startswith("/portForward/") or self.mode != "echo":
            return await super().app(request)
        self.requests.append(request)
        headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
        if "websocket" in (request.header("upgrade") or "").lower():
            headers = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
        headers.append(("X-Stream-Protocol-Version", self.protocol))
        return http.Response(101, headers, upgrade=self._echo)


@pytest.fixture
async def node(data_dir: Path) -> AsyncIterator[PortForwardNode]:
    """The node test_proxy's ``api`` dials."""
    async with serve_node(data_dir, PortForwardNode()) as fake:
        yield fake


async def test_spdy_and_the_channel_form_reach_the_node(api, node: PortForwardNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    uid = (await admin.ok("GET", f"{PODS}/web"))["metadata"]["uid"]
    resp, stream = await admin.upgrade(f"{PODS}/web/portforward", "POST", PF_SPDY)
    assert resp.header("x-stream-protocol-version") == "portforward.k8s.io"
    await _echo_roundtrip(resp, stream)
    spdy = node.requests[-1]
    assert (spdy.method, spdy.target) == ("POST", f"/portForward/default/web/{uid}")
    assert spdy.header("x-stream-protocol-version") == "portforward.k8s.io"
    assert spdy.header("audit-id")
    channel_form = [*WEBSOCKET[:4], ("Sec-WebSocket-Protocol", "v4.channel.k8s.io")]
    resp, stream = await admin.upgrade(f"{PODS}/web/portforward?ports=80,8080", "GET", channel_form)
    await _echo_roundtrip(resp, stream)
    ws = node.requests[-1]
    assert (ws.method, ws.target) == ("GET", f"/portForward/default/web/{uid}?ports=80%2C8080")
    assert ws.header("sec-websocket-protocol") == "v4.channel.k8s.io"


async def test_validation_before_dialing(api, node: PortForwardNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    await admin.ok("POST", PODS, _pod("nohost", [{"name": "main", "image": "busybox"}], node=""))
    cases = [
        ("nope/portforward", 404, 'pods "nope" not found'),
        ("nohost/portforward", 400, "pod nohost does not have a host assigned"),
        ("web/portforward?ports=http", 400, 'unable to parse "http" as a port'),
        ("web/portforward?ports=0", 400, 'unable to parse "0" as a port'),
        ("web/portforward?ports=", 400, 'query parameter "port" is required'),
    ]
    for path, code, message in cases:
        body = await _status(admin, f"{PODS}/{path}", "POST", PF_SPDY)
        assert (body["code"], body["message"]) == (code, message)
    resp = await http.request("POST", admin.base + f"{PODS}/web/portforward", ssl=admin.ctx)
    assert resp.status == 400 and json.loads(resp.body)["message"] == "Upgrade request required"
    assert node.requests == []


async def test_create_on_pods_portforward_whatever_the_method(api, node: PortForwardNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    await _bind(admin, "carol", ["create"], ["pods/exec"])
    await _bind(admin, "dave", ["get"], ["pods/portforward"])
    await _bind(admin, "erin", ["create"], ["pods/portforward"])
    for user in ("carol", "dave"):
        for method, headers in (("POST", PF_SPDY), ("GET", TUNNEL)):
            body = await _status(Client(api, user), f"{PODS}/web/portforward", method, headers)
            assert body["code"] == 403
            assert f'User "{user}" cannot create resource "pods/portforward"' in body["message"]
    assert node.requests == []
    resp, stream = await Client(api, "erin").upgrade(f"{PODS}/web/portforward", "POST", PF_SPDY)
    await _echo_roundtrip(resp, stream)


async def test_privileged_pods_are_for_cluster_admins(api, node: PortForwardNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    privileged = {"name": "main", "image": "busybox", "securityContext": {"privileged": True}}
    await admin.ok("POST", PODS, _pod("priv", [privileged]))
    await _bind(admin, "erin", ["create"], ["pods/portforward"])
    body = await _status(Client(api, "erin"), f"{PODS}/priv/portforward", "POST", PF_SPDY)
    assert (body["code"], body["message"]) == (
        403,
        'pods "priv" is forbidden: cannot exec into or attach to a privileged container',
    )
    assert node.requests == []
    resp, stream = await admin.upgrade(f"{PODS}/priv/portforward", "POST", PF_SPDY)
    await _echo_roundtrip(resp, stream)


async def _session_lines(api) -> list[dict]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 5 * SCALE
    while True:
        lines = [json.loads(x) for x in api.paths.audit.read_text().splitlines()]
        if any(x["type"] == "session_end" for x in lines) or time.monotonic() > deadline:
            return [x for x in lines if x["type"].startswith("session_")]
        await asyncio.sleep(0.05)


async def test_audit_lines_name_the_ports(api, node: PortForwardNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    channel_form = [*WEBSOCKET[:4], ("Sec-WebSocket-Protocol", "v4.channel.k8s.io")]
    resp, stream = await admin.upgrade(f"{PODS}/web/portforward?ports=8080,80", "GET", channel_form)
    await _echo_roundtrip(resp, stream)
    start, end = await _session_lines(api)
    assert start["type"] == "session_start" and end["type"] == "session_end"
    for line in (start, end):
        assert line["resource"] == "pods/portforward" and line["ports"] == [8080, 80]
        assert line["command"] == [] and "exit_code_error" not in line
    assert end["bytes_in"] == 5 and end["bytes_out"] == 5


def _client_ws() -> Protocol:
    return Protocol(Side.CLIENT, state=State.OPEN)


async def _ws_frames(stream, ws: Protocol, want: int) -> list[Frame]:  # type: ignore[no-untyped-def]
    frames: list[Frame] = []
    while len(frames) < want:
        data = await asyncio.wait_for(stream.read(), 5 * SCALE)
        assert data, "the tunnel ended"
        ws.receive_data(data)
        frames.extend(ws.events_received())
    return frames


async def test_the_websocket_tunnel_carries_spdy_to_the_node(api, node: PortForwardNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    resp, stream = await admin.upgrade(f"{PODS}/web/portforward", "GET", TUNNEL)
    assert resp.status == 101 and stream is not None, (resp.status, resp.body)
    assert resp.header("sec-websocket-protocol") == "SPDY/3.1+portforward.k8s.io"
    assert resp.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    sent = node.requests[-1]
    assert (sent.method, sent.header("upgrade")) == ("POST", "SPDY/3.1")
    assert sent.header("x-stream-protocol-version") == "portforward.k8s.io"
    assert not [n for n, _ in sent.headers if n.lower().startswith("sec-websocket")]
    ws = _client_ws()
    # Message boundaries mean nothing: two messages and a fragmented one, one byte stream.
    ws.send_binary(b"he")
    ws.send_binary(b"ll", fin=False)
    ws.send_continuation(b"o", fin=True)
    ws.send_ping(b"p")
    stream.writelines(ws.data_to_send())
    frames = await _ws_frames(stream, ws, 1)
    data = b""
    while len(data) < 5:
        for frame in frames:
            if frame.opcode is Opcode.BINARY:
                data += frame.data
        if len(data) < 5:
            frames = await _ws_frames(stream, ws, 1)
    assert data == b"HELLO"
    ws.send_close(1000)
    stream.writelines(ws.data_to_send())
    await asyncio.wait_for(stream.wait_closed(), 5 * SCALE)


async def test_the_tunnel_needs_the_node_to_speak_port_forward(api, node: PortForwardNode) -> None:
    node.protocol = "v4.channel.k8s.io"
    admin = Client(api, "admin", ["system:masters"])
    body = await _status(admin, f"{PODS}/web/portforward", "GET", TUNNEL)
    assert body["code"] == 500 and "invalid upgrade response" in body["message"]

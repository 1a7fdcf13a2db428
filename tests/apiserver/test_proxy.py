"""The exec/attach proxy over real TLS, against a fake node that speaks the kubelet side
just enough: validation texts, the authorisation matrix per transport, exec admission,
refused upgrades and redirects (nothing forwarded or followed), session limits, audit,
and a large transfer with every byte checked."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from apiserver.support import node_server, serve_node
from hatchway import pki
from hatchway.apiserver.exec_handler import SessionLimits
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, tls
from hatchway.transport.bytestream import ByteStream

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
PODS = "/api/v1/namespaces/default/pods"
SPDY = [
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
]
WEBSOCKET = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
]
EXEC_Q = "?command=echo&command=hi&container=main&stdout=true&stderr=true"


@dataclass
class FakeNode:
    """The kubelet side: records requests, answers per ``mode``."""

    mode: str = "echo"
    port: int = 0  # set by serve_node
    requests: list[http.Request] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)
    after_head: list[bytes] = field(default_factory=list)
    redirect_to: str = ""
    down_bytes: int = 0
    up_digest: str = ""
    #: When set, upgrades wait for it before the 101 (a slow node).
    gate: asyncio.Event | None = None
    #: When set, log streams wait for it before they end.
    log_gate: asyncio.Event | None = None

    async def app(self, request: http.Request) -> http.Response:
        if request.path.startswith("/sessions/"):
            # The API server asking for an exit code after a splice (tests/apiserver/
            # test_outcome.py): not one of the requests these tests count.
            return http.Response(404, [], b"session not found\n")
        self.requests.append(request)
        self.peers.append(tls.peer_identity(request.peercert))
        if request.path.startswith("/containerLogs/"):
            body = self._logs("follow=true" in request.target)
            return http.Response(200, [("Content-Type", "text/plain")], body_iter=body)
        if self.mode == "refuse":
            return http.Response(
                403, [("Content-Type", "text/plain"), ("X-Node", "1")], b"node says no\n"
            )
        if self.mode == "silent":
            await asyncio.sleep(3600)
        if self.mode == "redirect":
            return http.Response(302, [("Location", self.redirect_to)], b"")
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "hold":
            return http.Response(
                101,
                [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
                upgrade=self._hold,
            )
        return http.Response(
            101,
            [
                ("Connection", "Upgrade"),
                ("Upgrade", "SPDY/3.1"),
                ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ],
            upgrade=self._bulk if self.mode == "bulk" else self._echo,
        )

    async def _logs(self, follow: bool):
        for i in range(3):
            yield f"line {i}\n".encode()
            await asyncio.sleep(0.05)
        if follow and self.log_gate is not None:  # a follow lasts until the gate opens
            await self.log_gate.wait()

    async def _echo(self, stream: ByteStream) -> None:
        while data := await stream.read():
            stream.write(data.upper())
            await stream.drain()

    async def _hold(self, stream: ByteStream) -> None:
        await stream.read()

    async def _bulk(self, stream: ByteStream) -> None:
        """Read an 8-byte length and that many bytes (hashed), then send ``down_bytes``."""
        size = int.from_bytes(await stream.readexactly(8), "big")
        digest = hashlib.sha256()
        while size:
            data = await stream.read(min(size, 1 << 18))
            assert data
            digest.update(data)
            size -= len(data)
        self.up_digest = digest.hexdigest()
        block = _block()
        sent = 0
        while sent < self.down_bytes:
            chunk = block[: min(len(block), self.down_bytes - sent)]
            stream.write(chunk)
            sent += len(chunk)
            await stream.drain()


def _block() -> bytes:
    return hashlib.sha256(b"seed").digest() * (1 << 13)  # 256 KiB, not all one byte


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def node(data_dir: Path) -> AsyncIterator[FakeNode]:
    async with serve_node(data_dir, FakeNode()) as fake:
        yield fake


@pytest.fixture
async def api(data_dir: Path, tmp_path: Path, node: FakeNode):
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('tok-erin,erin,100,"devs"\n')
    config = ApiServerConfig(
        data_dir=data_dir,
        port=0,
        token_file=tokens,
        exec_limits=SessionLimits(per_user=2, total=50),
        exec_handshake_timeout=5 * SCALE,
    )
    server = ApiServer(config)
    await server.start()
    admin = Client(server, "admin", ["system:masters"])
    await admin.ok("POST", "/api/v1/nodes", _node(node.port))
    await admin.ok("POST", PODS, _pod("web", [{"name": "main", "image": "busybox"}]))
    yield server
    await server.close()


def _node(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"unschedulable": True},  # keeps the scheduler away from "nohost"
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def _pod(name: str, containers: list[dict[str, Any]], node: str = "n1", **spec: Any) -> dict:
    spec = {"containers": containers, **spec}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


class Client:
    def __init__(self, server: ApiServer, user: str = "", groups: Any = (), token: str = ""):
        assert server.paths is not None
        ca = server.paths.client_ca
        self.base = f"https://127.0.0.1:{server.port}"
        self.headers: list[tuple[str, str]] = []
        if token:
            self.ctx = tls.client_context(ca_file=ca)
            self.headers = [("Authorization", f"Bearer {token}")]
        else:
            cert, key = pki.mint_component_cert(ca.parent, user, groups)
            self.ctx = tls.client_context(ca_file=ca, cert_data=cert, key_data=key)

    async def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        resp = await http.request(
            method,
            self.base + path,
            headers=[("Content-Type", "application/json"), *self.headers],
            body=json.dumps(body).encode() if body is not None else b"",
            ssl=self.ctx,
        )
        assert 200 <= resp.status < 300, (resp.status, resp.body)
        return json.loads(resp.body)

    async def upgrade(
        self, path: str, method: str = "POST", headers: Any = SPDY, early: bytes = b""
    ) -> tuple[http.ClientResponse, ByteStream | None]:
        return await http.upgrade(
            method,
            self.base + path,
            headers=[*headers, *self.headers],
            ssl=self.ctx,
            timeout=10 * SCALE,
            early_data=early,
        )


async def _status(client: Client, path: str, method: str = "POST", headers: Any = SPDY):
    resp, stream = await client.upgrade(path, method, headers)
    assert stream is None, "unexpected 101"
    body = json.loads(resp.body)
    assert body["kind"] == "Status" and body["code"] == resp.status
    return body


async def _echo_roundtrip(resp: http.ClientResponse, stream: ByteStream | None) -> None:
    assert resp.status == 101 and stream is not None, (resp.status, resp.body)
    stream.write(b"hello")
    await stream.drain()
    assert await asyncio.wait_for(stream.readexactly(5), 5 * SCALE) == b"HELLO"
    stream.close()


async def test_exec_spdy_and_websocket_reach_the_node_rewritten(api, node: FakeNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    assert resp.header("x-stream-protocol-version") == "v4.channel.k8s.io"
    await _echo_roundtrip(resp, stream)
    req = node.requests[-1]
    uid = (await admin.ok("GET", f"{PODS}/web"))["metadata"]["uid"]
    assert req.method == "POST"
    # the node is told the pod's uid (issue 9: never another pod reusing the name)
    assert req.target == f"/exec/default/web/{uid}/main?command=echo&command=hi&error=1&output=1"
    assert req.header("upgrade") == "SPDY/3.1"
    assert req.header_values("x-stream-protocol-version") == ["v4.channel.k8s.io"]
    assert req.header("x-forwarded-for") == "127.0.0.1"
    assert node.peers[-1] == ("hatchway-apiserver", ["hatchway:apiservers"])
    # WebSocket GET, bearer token, defaulted container, apiserver-style booleans.
    erin = Client(api, token="tok-erin")
    await admin.ok(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": "erin-edit"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [{"kind": "User", "name": "erin"}],
        },
    )
    q = "?command=sh&stdin=&stdout=True&stderr=False&tty=0"
    resp, stream = await erin.upgrade(f"{PODS}/web/exec{q}", "GET", WEBSOCKET)
    await _echo_roundtrip(resp, stream)
    req = node.requests[-1]
    assert (
        req.method == "GET"
        and req.target == f"/exec/default/web/{uid}/main?command=sh&input=1&output=1"
    )
    assert req.header("authorization") is None
    assert req.header("sec-websocket-protocol") == "v5.channel.k8s.io"
    # attach, and the legacy path with kubelet-style parameters.
    resp, stream = await admin.upgrade(f"{PODS}/web/attach?stdout=1&tty=1")
    await _echo_roundtrip(resp, stream)
    assert node.requests[-1].target == f"/attach/default/web/{uid}/main?output=1&tty=1"
    legacy = "/proxy/minions/n1/exec/default/web/main?command=ls&command=-l&output=1&input=true"
    resp, stream = await admin.upgrade(legacy)
    await _echo_roundtrip(resp, stream)
    legacy_target = f"/exec/default/web/{uid}/main?command=ls&command=-l&output=1"
    assert node.requests[-1].target == legacy_target
    # The seed's users write the API server's spelling there: it means the same.
    resp, stream = await admin.upgrade(
        "/proxy/minions/n1/exec/default/web/main?command=ls&stdout=true&stdin=1"
    )
    await _echo_roundtrip(resp, stream)
    assert node.requests[-1].target == f"/exec/default/web/{uid}/main?command=ls&input=1&output=1"
    wrong = await _status(admin, "/proxy/minions/n2/exec/default/web/main?command=ls&output=1")
    assert wrong["code"] == 400


async def test_validation_texts_before_dialing(api, node: FakeNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    containers = [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]
    await admin.ok("POST", PODS, _pod("two", containers))
    await admin.ok("POST", PODS, _pod("nohost", containers[:1], node=""))
    init = [{"name": "i", "image": "x"}]
    await admin.ok("POST", PODS, _pod("twoinit", containers, initContainers=init))
    await admin.ok("POST", PODS, _pod("oneinit", containers[:1], initContainers=init))
    cases = {
        f"{PODS}/ghost/exec?command=ls&stdout=1": (404, 'pods "ghost" not found'),
        f"{PODS}/nohost/exec?command=ls&stdout=1": (
            400,
            "pod nohost does not have a host assigned",
        ),
        f"{PODS}/two/exec?command=ls&stdout=1": (
            400,
            "a container name must be specified for pod two, choose one of: [a b]",
        ),
        f"{PODS}/twoinit/exec?command=ls&stdout=1": (
            400,
            "a container name must be specified for pod twoinit, choose one of: [a b]"
            " or one of the init containers: [i]",
        ),
        # One regular container is the default, whatever the init containers: the
        # request gets as far as its missing command.
        f"{PODS}/oneinit/exec?stdout=1": (
            400,
            "you must specify at least one command for the container",
        ),
        f"{PODS}/two/exec?command=ls&stdout=1&container=c": (
            400,
            "container c is not valid for pod two",
        ),
        f"{PODS}/web/exec?stdout=1": (
            400,
            "you must specify at least one command for the container",
        ),
        f"{PODS}/web/exec?command=echo&command=a%00b&stdout=1": (
            400,
            "command argument 1 contains a NUL byte",
        ),
        f"{PODS}/web/exec?command=ls&stdout=false&stderr=0": (
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
    }
    for path, (code, message) in cases.items():
        body = await _status(admin, path)
        assert (body["code"], body["message"]) == (code, message), path
    plain = await http.request(
        "POST", admin.base + f"{PODS}/web/exec?command=ls&stdout=1", ssl=admin.ctx
    )
    assert plain.status == 400 and json.loads(plain.body)["message"] == "Upgrade request required"
    st = await admin.ok("GET", f"{PODS}/web")
    st["status"] = {
        "phase": "Running",
        "containerStatuses": [
            {"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}
        ],
    }
    await admin.ok("PUT", f"{PODS}/web/status", st)
    waiting = await _status(admin, f"{PODS}/web/exec?command=ls&stdout=1")
    assert (
        waiting["message"] == 'container "main" in pod "web" is waiting to start: ContainerCreating'
    )
    assert node.requests == []


async def _bind(admin: Client, user: str, verbs: list[str], resources: list[str]) -> None:
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    await admin.ok(
        "POST",
        f"{rbac}/namespaces/default/roles",
        {
            "metadata": {"name": user},
            "rules": [{"apiGroups": [""], "resources": resources, "verbs": verbs}],
        },
    )
    await admin.ok(
        "POST",
        f"{rbac}/namespaces/default/rolebindings",
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": [{"kind": "User", "name": user}],
        },
    )


async def test_authorisation_matrix(api, node: FakeNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    await _bind(admin, "getter", ["get", "list", "watch"], ["pods", "pods/exec", "pods/attach"])
    await _bind(admin, "creator", ["create"], ["pods/exec"])
    await _bind(admin, "viewer", ["get", "list", "watch"], ["pods"])
    exec_path = f"{PODS}/web/exec{EXEC_Q}"
    for user, allowed in (("getter", False), ("creator", True), ("viewer", False)):
        client = Client(api, user)
        for method, headers in (("GET", WEBSOCKET), ("POST", SPDY)):
            resp, stream = await client.upgrade(exec_path, method, headers)
            if allowed:
                await _echo_roundtrip(resp, stream)
                continue
            assert stream is None and resp.status == 403, (user, method, resp.status)
            body = json.loads(resp.body)
            assert body["message"] == (
                f'pods "web" is forbidden: User "{user}" cannot create resource "pods/exec"'
                ' in API group "" in the namespace "default"'
            )
    creator = Client(api, "creator")
    attach = await _status(creator, f"{PODS}/web/attach?stdout=1")
    assert attach["code"] == 403 and "pods/attach" in attach["message"]
    legacy = await _status(
        Client(api, "getter"), "/proxy/minions/n1/exec/default/web/main?command=ls&output=1"
    )
    assert legacy["code"] == 403
    nobody = await http.upgrade(
        "POST",
        admin.base + exec_path,
        headers=SPDY,
        ssl=tls.client_context(ca_file=api.paths.client_ca),
    )
    assert nobody[0].status == 401 and json.loads(nobody[0].body)["reason"] == "Unauthorized"
    assert len(node.requests) == 2  # only creator's two sessions reached the node


async def test_privileged_pods_need_a_cluster_admin(api, node: FakeNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    privileged = [{"name": "main", "image": "x", "securityContext": {"privileged": True}}]
    await admin.ok("POST", PODS, _pod("priv", privileged))
    await admin.ok(
        "POST", PODS, _pod("hostnet", [{"name": "main", "image": "x"}], hostNetwork=True)
    )
    await _bind(admin, "dev", ["create", "get"], ["pods", "pods/exec"])
    dev = Client(api, "dev")
    body = await _status(dev, f"{PODS}/priv/exec{EXEC_Q}")
    assert body["code"] == 403
    assert (
        body["message"]
        == 'pods "priv" is forbidden: cannot exec into or attach to a privileged container'
    )
    body = await _status(dev, f"{PODS}/hostnet/exec{EXEC_Q}", "GET", WEBSOCKET)
    assert "using host network" in body["message"]
    assert node.requests == []
    resp, stream = await admin.upgrade(f"{PODS}/priv/exec{EXEC_Q}")
    await _echo_roundtrip(resp, stream)
    resp, stream = await dev.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    await _echo_roundtrip(resp, stream)


async def test_refused_upgrade_is_relayed_and_nothing_more_reaches_the_node(
    api, node: FakeNode
) -> None:
    node.mode = "refuse"
    admin = Client(api, "admin", ["system:masters"])
    smuggled = b"GET /runningpods/ HTTP/1.1\r\nHost: n1\r\n\r\n" + b"SPDY-FRAMES" * 100
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}", early=smuggled)
    assert stream is None
    assert resp.status == 403 and resp.body == b"node says no\n"
    assert resp.header("x-node") == "1" and resp.header("connection") == "close"
    # Raw socket: send more after the refusal; the API server has closed the connection.
    raw = await ByteStream.connect(
        "127.0.0.1", api.port, ssl=admin.ctx, server_hostname="127.0.0.1"
    )
    head = (
        f"POST {PODS}/web/exec{EXEC_Q} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        "Upgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    raw.write(head)
    await raw.drain()
    answer = b""
    async with asyncio.timeout(5 * SCALE):
        while b"node says no\n" not in answer:
            chunk = await raw.read()
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 403")
        for _ in range(3):
            try:
                raw.write(b"GET /pods HTTP/1.1\r\nHost: n1\r\n\r\n")
                await raw.drain()
            except Exception:
                break
            await asyncio.sleep(0.05)
        while await raw.read():
            pass  # the API server closes the connection
    raw.abort()
    await asyncio.sleep(0.2)
    uid = (await admin.ok("GET", f"{PODS}/web"))["metadata"]["uid"]
    assert [r.target.split("?")[0] for r in node.requests] == [f"/exec/default/web/{uid}/main"] * 2


async def test_redirect_from_node_is_not_followed(api, node: FakeNode, data_dir: Path) -> None:
    hits: list[str] = []

    async def evil(request: http.Request) -> http.Response:
        hits.append(request.target)
        return http.Response(200, [], b"followed!")

    bundle = pki.ensure_pki(data_dir, node_name="n1")
    other = http.HttpServer(evil)
    await other.start("127.0.0.1", 0, ssl=tls.server_context(bundle.node.cert, bundle.node.key))
    try:
        node.mode = "redirect"
        node.redirect_to = f"https://127.0.0.1:{other.port}/runningpods/"
        admin = Client(api, "admin", ["system:masters"])
        body = await _status(admin, f"{PODS}/web/exec{EXEC_Q}")
        assert body["code"] == 500
        assert (
            body["message"] == "Internal error occurred: invalid upgrade response: status code 302"
        )
        assert hits == []
    finally:
        await other.close()


async def test_node_unreachable_and_session_limits(api, node: FakeNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    await _bind(admin, "dev", ["create"], ["pods/exec"])
    dev = Client(api, "dev")
    node.mode = "hold"
    held = [await dev.upgrade(f"{PODS}/web/exec{EXEC_Q}") for _ in range(2)]
    assert all(r.status == 101 for r, _ in held)
    resp, stream = await dev.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    assert stream is None and resp.status == 429 and resp.header("retry-after") == "1"
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")  # other user: fine
    assert resp.status == 101 and stream is not None
    stream.close()
    for _, s in held:
        assert s is not None
        s.close()
    await asyncio.sleep(0.3)
    node.mode = "echo"
    await _echo_roundtrip(*(await dev.upgrade(f"{PODS}/web/exec{EXEC_Q}")))
    await admin.ok("PUT", "/api/v1/nodes/n1/status", _node(1))  # nothing listens on port 1
    body = await _status(admin, f"{PODS}/web/exec{EXEC_Q}")
    assert body["code"] == 500 and body["message"].startswith("error dialing backend:")


async def test_audit_records_requests_and_session_end(api, node: FakeNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    q = "?command=mysql&command=--password%3Dhunter2&container=main&stdin=true&stdout=true"
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{q}")
    await _echo_roundtrip(resp, stream)
    await _status(Client(api, "mallory"), f"{PODS}/web/exec{EXEC_Q}")
    assert api.paths.audit is not None
    deadline = time.monotonic() + 5 * SCALE
    while True:
        lines = [json.loads(x) for x in api.paths.audit.read_text().splitlines()]
        ends = [x for x in lines if x["type"] == "session_end"]
        if ends or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    text = api.paths.audit.read_text()
    assert "hunter2" not in text
    (end,) = ends
    assert end["user"] == "admin" and end["resource"] == "pods/exec" and end["container"] == "main"
    assert end["command"] == ["mysql", "--password=[REDACTED]"]
    assert end["stdin"] is True and end["tty"] is False
    assert end["bytes_in"] == 5 and end["bytes_out"] == 5 and end["duration"] >= 0
    allowed = [x for x in lines if x["type"] == "request" and x["code"] == 101]
    assert allowed and allowed[0]["decision"] == "allow" and allowed[0]["verb"] == "create"
    denied = [x for x in lines if x["user"] == "mallory"]
    assert denied[0]["decision"] == "deny" and denied[0]["code"] == 403


@pytest.mark.slow
async def test_bulk_transfer_through_the_proxy(api, node: FakeNode) -> None:
    down = int(os.environ.get("HATCHWAY_PROXY_BULK_MIB", "1024")) << 20
    up = 64 << 20
    node.mode = "bulk"
    node.down_bytes = down
    admin = Client(api, "admin", ["system:masters"])
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    assert resp.status == 101 and stream is not None
    block = _block()
    started = time.perf_counter()
    stream.write(up.to_bytes(8, "big"))
    sent_digest = hashlib.sha256()
    for _ in range(up // len(block)):
        stream.write(block)
        sent_digest.update(block)
        await stream.drain()
    got = 0
    digest = hashlib.sha256()
    while chunk := await stream.read():
        digest.update(chunk)
        got += len(chunk)
    elapsed = time.perf_counter() - started
    expected = hashlib.sha256()
    for _ in range(down // len(block)):
        expected.update(block)
    assert got == down and digest.hexdigest() == expected.hexdigest()
    assert node.up_digest == sent_digest.hexdigest()
    print(f"\nproxy bulk: {(up + down) / elapsed / 1e6:.0f} MB/s ({elapsed:.1f} s)")


async def test_logs_are_proxied_to_the_node(api, node: FakeNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    url = f"{admin.base}{PODS}/web/log?follow=true&tailLines=10"
    async with await http.stream("GET", url, ssl=admin.ctx) as resp:
        assert resp.status == 200
        body = b"".join([chunk async for chunk in resp])
    assert body == b"line 0\nline 1\nline 2\n"
    uid = (await admin.ok("GET", f"{PODS}/web"))["metadata"]["uid"]
    assert (
        node.requests[-1].target
        == f"/containerLogs/default/web/main?follow=true&podUID={uid}&tailLines=10"
    )
    resp = await http.request("GET", f"{admin.base}{PODS}/web/log?container=nope", ssl=admin.ctx)
    assert resp.status == 400
    assert json.loads(resp.body)["message"] == "container nope is not valid for pod web"


async def test_handshake_and_idle_timeouts(api, node: FakeNode) -> None:
    proxy = api.http.app.exec_handler.proxy
    proxy.handshake_timeout, proxy.idle_timeout = 0.3, 0.3
    admin = Client(api, "admin", ["system:masters"])
    node.mode = "silent"
    started = time.monotonic()
    body = await _status(admin, f"{PODS}/web/exec{EXEC_Q}")
    assert body["code"] == 500 and body["message"] == "error dialing backend: handshake timed out"
    assert time.monotonic() - started < 3 * SCALE
    node.mode = "hold"
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    assert resp.status == 101 and stream is not None
    async with asyncio.timeout(3 * SCALE):
        assert await stream.read() == b""  # closed by the API server after 0.3 s idle
    stream.close()


class _EchoProcess:
    """A stand-in for a container process: prints its argv, upper-cases stdin, and
    exits 7 when the command is ``fail``."""

    error_message = None

    def __init__(self, options: Any) -> None:
        self.out = (" ".join(options.command) + "\n").encode()
        self.code = 7 if "fail" in options.command else 0
        self.stdin: asyncio.Queue[bytes] = asyncio.Queue()
        self.reading = options.stdin

    async def write_stdin(self, data: bytes) -> None:
        await self.stdin.put(data)

    async def close_stdin(self) -> None:
        await self.stdin.put(b"")

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        if self.out:
            out, self.out = self.out, b""
            return out
        if self.reading and (data := await self.stdin.get()):
            return data.upper()
        self.reading = False
        return b""

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        return b""

    def resize(self, width: int, height: int) -> None:
        pass

    async def wait(self) -> int:
        return self.code

    async def kill(self) -> None:
        pass


async def _found(namespace: str, pod: str, uid: str, container: str) -> tuple[str, bool]:
    return ("cid", True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_real_kubectl_exec_through_the_proxy(data_dir: Path, tmp_path: Path) -> None:
    """kubectl -> API server proxy -> the node agent's endpoint (runner faked), over
    WebSocket v5 and over SPDY."""
    from hatchway.node.identity import CallerIdentity
    from hatchway.node.server import NodeEndpoint

    bundle = pki.ensure_pki(data_dir, node_name="n1")

    async def start(container_id: str, options: Any) -> _EchoProcess:
        return _EchoProcess(options)

    endpoint = NodeEndpoint(
        caller=CallerIdentity.from_ca(str(bundle.node_client_ca.cert)),
        lookup=_found,
        start=start,
    )
    async with node_server(data_dir, endpoint) as node_http:
        server = ApiServer(ApiServerConfig(data_dir=data_dir, port=0, scheduler_interval=0.1))
        await server.start()
        try:
            admin = Client(server, "admin", ["system:masters"])
            node = _node(node_http.port)
            node["spec"] = {}
            await admin.ok("POST", "/api/v1/nodes", node)
            await admin.ok(
                "POST", PODS, _pod("web", [{"name": "main", "image": "busybox"}], node="")
            )
            async with asyncio.timeout(5 * SCALE):  # the scheduler binds it to n1
                while not (await admin.ok("GET", f"{PODS}/web"))["spec"].get("nodeName"):
                    await asyncio.sleep(0.05)
            home = tmp_path / "home"
            home.mkdir()
            config = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": admin.base,
                            "certificate-authority": str(bundle.ca.cert),
                        },
                    }
                ],
                "users": [
                    {
                        "name": "u",
                        "user": {
                            "client-certificate": str(bundle.admin.cert),
                            "client-key": str(bundle.admin.key),
                        },
                    }
                ],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
            (home / "config").write_text(json.dumps(config))
            env = dict(os.environ, HOME=str(home), KUBECONFIG=str(home / "config"))
            for spdy in (False, True):
                if spdy:
                    env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
                for args, stdin, code, out in (
                    (["exec", "web", "--", "echo", "hi"], b"", 0, b"echo hi\n"),
                    (["exec", "web", "--", "fail"], b"", 7, b"fail\n"),
                    (["exec", "-i", "web", "--", "cat"], b"abc\n", 0, b"cat\nABC\n"),
                ):
                    proc = await asyncio.create_subprocess_exec(
                        "kubectl",
                        *args,
                        env=env,
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                    )
                    got, err = await asyncio.wait_for(proc.communicate(stdin), 60 * SCALE)
                    assert (proc.returncode, got) == (code, out), (spdy, args, err)
        finally:
            await server.close()

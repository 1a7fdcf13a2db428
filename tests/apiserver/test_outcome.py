"""The session end line's exit code, asked of the node after the splice: a real API
server in-process, in front of a node endpoint whose process is a stand-in that exits
with the code it is told; and the cases where the node cannot say."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from hatchway import pki
from hatchway.apiserver.connect import NodeAddress
from hatchway.apiserver.outcome import OutcomeClient, _parse
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.node.identity import CallerIdentity
from hatchway.node.server import NodeEndpoint
from hatchway.protocol import handshake
from hatchway.session.client import ClientSession
from hatchway.transport import http, tls
from hatchway.transport.spdy import SpdyConnection
from hatchway.types import ExecOptions

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
PODS = "/api/v1/namespaces/default/pods"


class ExitingProcess:
    """Exits at once with ``code``; holds until released when ``hold`` is set."""

    error_message = None

    def __init__(self, code: int, hold: asyncio.Event | None) -> None:
        self.code = code
        self.hold = hold

    async def write_stdin(self, data: bytes) -> None:
        pass

    async def close_stdin(self) -> None:
        pass

    async def read_stdout(self, max_bytes: int = 65536) -> bytes:
        return b""

    async def read_stderr(self, max_bytes: int = 65536) -> bytes:
        return b""

    def resize(self, width: int, height: int) -> None:
        pass

    async def wait(self) -> int:
        if self.hold is not None:
            await self.hold.wait()
        return self.code

    async def kill(self) -> None:
        if self.hold is not None:
            self.hold.set()


class Node:
    """A node endpoint (the real one, routes and sessions) with stand-in processes;
    records the Audit-ID headers of the upgrades it gets."""

    def __init__(self, caller: CallerIdentity) -> None:
        self.audit_ids: list[list[str]] = []
        self.hold: asyncio.Event | None = None
        self.pod_known = True
        self.started = 0

        async def lookup(namespace: str, pod: str, uid: str, container: str):  # type: ignore[no-untyped-def]
            return ("cid", True) if self.pod_known else None

        async def start(container_id: str, options: ExecOptions) -> ExitingProcess:
            self.started += 1
            return ExitingProcess(int(options.command[-1]), self.hold)

        self.endpoint = NodeEndpoint(caller=caller, lookup=lookup, start=start)
        self.server = http.HttpServer(self.app)

    async def app(self, request: http.Request) -> http.Response:
        if request.path.startswith("/exec/"):
            self.audit_ids.append(request.header_values("audit-id"))
        return await self.endpoint(request)


@pytest.fixture
async def cluster(tmp_path: Path):
    data_dir = tmp_path / "data"
    bundle = pki.ensure_pki(data_dir, node_name="n1")
    node = Node(CallerIdentity.from_ca(str(bundle.node_client_ca.cert)))
    ctx = tls.server_context(
        bundle.node.cert, bundle.node.key, client_ca=bundle.node_client_ca.cert
    )
    await node.server.start("127.0.0.1", 0, ssl=ctx)
    api = ApiServer(ApiServerConfig(data_dir=data_dir, port=0))
    await api.start()
    cert, key = pki.mint_user_cert(bundle.ca, "root", ["system:masters"], admin=True)
    client = tls.client_context(ca_file=bundle.ca.cert, cert_data=cert, key_data=key)
    base = f"https://127.0.0.1:{api.port}"
    for path, body in (
        ("/api/v1/nodes", _node(node.server.port)),
        (PODS, {"metadata": {"name": "web"}, "spec": _spec()}),
    ):
        resp = await http.request(
            "POST",
            base + path,
            body=json.dumps(body).encode(),
            ssl=client,
            headers=[("Content-Type", "application/json")],
        )
        assert resp.status == 201, resp.body
    yield api, node, base, client
    await api.close()
    await node.server.close()


def _spec() -> dict[str, Any]:
    return {"nodeName": "n1", "containers": [{"name": "main", "image": "busybox"}]}


def _node(port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "n1"},
        "spec": {"unschedulable": True},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


async def upgrade_exec(
    base: str, client: Any, code: int, forged: str = ""
) -> tuple[http.ClientResponse, Any]:
    headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ]
    if forged:
        headers.append(("Audit-ID", forged))
    query = f"?command=exit&command={code}&container=main&stdout=true"
    return await http.upgrade(
        "POST", f"{base}{PODS}/web/exec{query}", headers=headers, ssl=client, timeout=10 * SCALE
    )


async def open_exec(base: str, client: Any, code: int, forged: str = "") -> ClientSession:
    resp, stream = await upgrade_exec(base, client, code, forged)
    assert stream is not None, (resp.status, resp.body)
    protocol = handshake.check_spdy_response(resp.status, resp.headers)
    conn = SpdyConnection(stream, client=True, protocol=protocol)
    conn.start()
    session = ClientSession(
        conn, ExecOptions(("exit", str(code)), "main", stdout=True, stderr=False)
    )
    await session.start()
    return session


async def audit_lines(api: ApiServer, wanted: int) -> list[dict[str, Any]]:
    """The audit lines once ``wanted`` session_end lines are there."""
    assert api.paths is not None and api.paths.audit is not None
    deadline = time.monotonic() + 10 * SCALE
    while True:
        lines = [json.loads(x) for x in api.paths.audit.read_text().splitlines()]
        if sum(x["type"] == "session_end" for x in lines) >= wanted:
            return lines
        assert time.monotonic() < deadline, lines
        await asyncio.sleep(0.02)


async def test_the_end_line_carries_the_exit_code_the_node_reported(cluster) -> None:
    api, node, base, client = cluster
    session = await open_exec(base, client, 42, forged="someone-elses-session")
    async with asyncio.timeout(10 * SCALE):
        assert await session.wait() == 42
    await session.close()
    lines = await audit_lines(api, 1)
    (start,) = [x for x in lines if x["type"] == "session_start"]
    (end,) = [x for x in lines if x["type"] == "session_end"]
    (request,) = [x for x in lines if x["type"] == "request" and x["code"] == 101]
    assert lines.index(start) < lines.index(end)
    assert start["request_id"] == end["request_id"] == request["request_id"]
    # The node got the API server's id, once; the client's forged one was dropped.
    assert node.audit_ids == [[request["request_id"]]]
    assert end["exit_code"] == 42 and "exit_code_error" not in end
    assert start["code"] == 101 and start["command"] == ["exit", "42"]
    assert start["pod_uid"] and start["pod_uid"] == end["pod_uid"]


async def test_the_end_line_says_why_when_the_node_cannot_be_reached(cluster) -> None:
    api, node, base, client = cluster
    node.hold = asyncio.Event()
    session = await open_exec(base, client, 7)
    await node.server.close()  # the node goes away mid-session: nobody left to ask
    with contextlib.suppress(Exception):  # the stream just breaks; the audit line matters
        async with asyncio.timeout(10 * SCALE):
            await session.wait()
    await session.close()
    (end,) = [x for x in await audit_lines(api, 1) if x["type"] == "session_end"]
    assert end["exit_code"] is None
    assert end["exit_code_error"].startswith("the node could not be asked: ")


async def test_a_start_line_for_a_node_refusal_and_an_unreachable_node(cluster) -> None:
    api, node, base, client = cluster
    node.pod_known = False
    resp, stream = await upgrade_exec(base, client, 1)
    assert stream is None and resp.status == 404
    await node.server.close()
    resp, stream = await upgrade_exec(base, client, 2)
    assert stream is None and resp.status == 500
    assert api.paths is not None and api.paths.audit is not None
    lines = [json.loads(x) for x in api.paths.audit.read_text().splitlines()]
    refused, unreachable = [x for x in lines if x["type"] == "session_start"]
    assert (refused["code"], refused["command"], "error" in refused) == (404, ["exit", "1"], False)
    assert unreachable["code"] == 500 and unreachable["command"] == ["exit", "2"]
    assert unreachable["error"].startswith("error dialing backend:")
    assert not [x for x in lines if x["type"] == "session_end"]


async def test_no_session_runs_when_its_start_cannot_be_written(cluster) -> None:
    """A log that cannot take the start line (a full disk) must not be a way to exec
    unaudited: the client gets a 500 and the node's session is cut before it starts."""
    api, node, base, client = cluster
    assert api.audit is not None
    api.audit.close()
    resp, stream = await upgrade_exec(base, client, 3)
    assert stream is None and resp.status == 500
    assert "audit log unavailable" in json.loads(resp.body)["message"]
    ((audit_id,),) = node.audit_ids
    record = node.endpoint.outcomes.get(audit_id)
    assert record is not None
    async with asyncio.timeout(5 * SCALE):
        await record.done.wait()  # the node saw its connection go
    assert record.exit_code is None and node.started == 0


async def test_a_silent_node_is_given_up_on(tmp_path: Path) -> None:
    bundle = pki.ensure_pki(tmp_path, node_name="n1")

    async def silent(request: http.Request) -> http.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    server = http.HttpServer(silent)
    await server.start("127.0.0.1", 0, ssl=tls.server_context(bundle.node.cert, bundle.node.key))
    client = tls.client_context(
        ca_file=bundle.ca.cert,
        cert_file=bundle.apiserver_kubelet_client.cert,
        key_file=bundle.apiserver_kubelet_client.key,
    )
    try:
        outcomes = OutcomeClient(client, timeout=0.2 * SCALE)
        assert await outcomes.fetch(NodeAddress("127.0.0.1", server.port), "r1") == (
            None,
            "the node did not answer in time",
        )
        await outcomes.aclose()
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"finished":true,"exitCode":42,"error":""}', (42, "")),
        (b'{"finished":true,"exitCode":0}', (0, "")),
        (b'{"finished":false,"exitCode":null}', (None, "the session had not ended on the node")),
        (
            b'{"finished":true,"exitCode":null,"error":"runc exec failed"}',
            (None, "the node reported no exit code: runc exec failed"),
        ),
        (b'{"finished":true,"exitCode":true}', (None, "the node reported no exit code")),
        (b'{"finished":true,"exitCode":"42"}', (None, "the node reported no exit code")),
        (b"[42]", (None, "the node's answer is not a JSON object")),
        (b"\xff", (None, "the node's answer is not JSON")),
        # Within MAX_ANSWER, yet deeper than Python's decoder goes: not a crash.
        (b"[" * 2048 + b"]" * 2048, (None, "the node's answer is not JSON")),
    ],
)
def test_the_nodes_answer_is_checked(body: bytes, expected) -> None:
    assert _parse(body) == expected


async def test_timeouts_come_from_the_config(tmp_path: Path) -> None:
    """The API server's connection and exec timeouts are its configuration; ``scaled``
    stretches them all (what ``--timeout-scale`` does) and nothing else."""
    config = ApiServerConfig(data_dir=tmp_path / "data", port=0, outcome_timeout=0.5)
    scaled = config.scaled(4)
    assert scaled.outcome_timeout == 2.0
    assert scaled.exec_handshake_timeout == 4 * config.exec_handshake_timeout
    assert scaled.exec_idle_timeout == 4 * config.exec_idle_timeout
    assert scaled.http_limits == config.http_limits.scaled(4)
    assert scaled.node_monitor_grace == config.node_monitor_grace
    api = ApiServer(scaled)
    await api.start()
    try:
        assert api.outcomes is not None and api.outcomes.timeout == 2.0
        assert api.http is not None and api.http.limits.head_timeout == 4 * 30.0
    finally:
        await api.close()

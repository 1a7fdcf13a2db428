"""The API server's kept-alive node connections (:mod:`hatchway.apiserver.proxy`): an exec
upgrade goes on the connection the previous session's outcome fetch left, never on one
another session holds; a pooled connection the node closed is replaced; the pool stays
bounded; with ``reuse_node_connections`` off every upgrade dials anew. Real TLS, the
fake node of ``test_proxy``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from apiserver.test_proxy import (
    EXEC_Q,
    PODS,
    SCALE,
    Client,
    FakeNode,
    _echo_roundtrip,
    _node,
    _pod,
    data_dir,  # noqa: F401  (a fixture)
)
from hatchway import pki
from hatchway.apiserver.exec_handler import SessionLimits
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.transport import http, httpclient, tls
from hatchway.transport.bytestream import ByteStream


@dataclass
class CountingNode(FakeNode):
    """Records every request with the client port it came on, and the connections."""

    seen: list[tuple[str, int]] = field(default_factory=list)
    streams: dict[int, ByteStream] = field(default_factory=dict)

    async def app(self, request: http.Request) -> http.Response:
        port = int(request.peer[1])
        self.seen.append((request.path, port))
        self.streams[port] = request.stream
        return await super().app(request)

    def ports(self, prefix: str) -> list[int]:
        return [port for path, port in self.seen if path.startswith(prefix)]


@pytest.fixture
async def node(data_dir: Path):  # noqa: F811
    bundle = pki.ensure_pki(data_dir, node_name="n1")
    fake = CountingNode()
    ctx = tls.server_context(
        bundle.node.cert,
        bundle.node.key,
        client_ca=bundle.node_client_ca.cert,
        require_client_cert=True,
    )
    server = http.HttpServer(fake.app)
    await server.start("127.0.0.1", 0, ssl=ctx)
    fake.port = server.port  # type: ignore[attr-defined]
    yield fake
    await server.close()


async def _api(data_dir: Path, node: CountingNode, reuse: bool = True) -> ApiServer:  # noqa: F811
    config = ApiServerConfig(
        data_dir=data_dir,
        port=0,
        exec_limits=SessionLimits(per_user=50, total=50),
        exec_handshake_timeout=5 * SCALE,
        reuse_node_connections=reuse,
    )
    server = ApiServer(config)
    await server.start()
    admin = Client(server, "admin", ["system:masters"])
    await admin.ok("POST", "/api/v1/nodes", _node(node.port))  # type: ignore[attr-defined]
    await admin.ok("POST", PODS, _pod("web", [{"name": "main", "image": "busybox"}]))
    return server


@pytest.fixture
async def api(data_dir: Path, node: CountingNode):  # noqa: F811
    server = await _api(data_dir, node)
    yield server
    await server.close()


async def _outcomes(node: CountingNode, count: int) -> list[int]:
    """The ports of the first ``count`` outcome fetches, once they have all arrived."""
    async with asyncio.timeout(10 * SCALE):
        while len(node.ports("/sessions/")) < count:
            await asyncio.sleep(0.01)
    return node.ports("/sessions/")


async def _exec(admin: Client) -> None:
    resp, stream = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    await _echo_roundtrip(resp, stream)


async def test_an_upgrade_takes_the_connection_the_last_outcome_fetch_left(
    api: ApiServer, node: CountingNode
) -> None:
    admin = Client(api, "admin", ["system:masters"])
    for i in range(3):
        await _exec(admin)
        await _outcomes(node, i + 1)
    execs, fetches = node.ports("/exec/"), node.ports("/sessions/")
    assert len(execs) == 3 and len(fetches) == 3
    # The first upgrade had nothing to reuse; each later one went on the connection the
    # fetch before it used -- a connection then out of the pool for good: the fetch
    # after each upgrade came on another one.
    assert execs[1] == fetches[0] and execs[2] == fetches[1]
    assert execs[0] not in fetches
    for upgrade, fetch in zip(execs, fetches, strict=True):
        assert upgrade != fetch


async def test_two_sessions_never_share_a_connection(api: ApiServer, node: CountingNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    await _exec(admin)
    await _outcomes(node, 1)
    # Two sessions open at once, while one kept-alive connection is pooled.
    first = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    second = await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}")
    a, b = node.ports("/exec/")[-2:]
    assert a != b
    await _echo_roundtrip(*first)
    await _echo_roundtrip(*second)


async def test_a_pooled_connection_the_node_closed_is_replaced(
    api: ApiServer, node: CountingNode
) -> None:
    admin = Client(api, "admin", ["system:masters"])
    await _exec(admin)
    (pooled,) = await _outcomes(node, 1)
    node.streams[pooled].abort()  # the node drops the idle kept-alive connection
    await asyncio.sleep(0.2)
    await _exec(admin)  # still works, on a new connection
    assert node.ports("/exec/")[-1] not in (pooled, node.ports("/exec/")[0])
    # And a connection dropped unseen (no EOF read yet) is retried too: found stale
    # before any answer, replaced before the node could see the request twice.
    before = len(node.ports("/exec/"))
    (_, pooled) = await _outcomes(node, 2)
    node.streams[pooled].abort()
    await _exec(admin)
    assert len(node.ports("/exec/")) == before + 1


async def test_the_pool_stays_bounded(api: ApiServer, node: CountingNode) -> None:
    admin = Client(api, "admin", ["system:masters"])
    count = httpclient.POOL_PER_KEY + 4
    sessions = [await admin.upgrade(f"{PODS}/web/exec{EXEC_Q}") for _ in range(count)]
    for session in sessions:
        await _echo_roundtrip(*session)
    await _outcomes(node, count)
    assert api.outcomes is not None
    pool: dict[Any, list[Any]] = api.outcomes.http_client._pool
    assert sum(len(conns) for conns in pool.values()) <= httpclient.POOL_PER_KEY


async def test_without_reuse_every_upgrade_dials(data_dir: Path, node: CountingNode) -> None:  # noqa: F811
    server = await _api(data_dir, node, reuse=False)
    try:
        admin = Client(server, "admin", ["system:masters"])
        for i in range(2):
            await _exec(admin)
            await _outcomes(node, i + 1)
        assert not set(node.ports("/exec/")) & set(node.ports("/sessions/"))
    finally:
        await server.close()

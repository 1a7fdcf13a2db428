"""The node's heartbeat Lease (protocol.md 11.5) against a real API server over mutual TLS,
as the node's own certificate: created in kube-node-lease with the kubelet's duration and
an ownerReference to the Node, renewed (renewTime moves), no other node's Lease and no
Lease elsewhere writable; and the node lifecycle takes a renewal as a heartbeat."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from hatchway import pki
from hatchway.api import lease as lease_api
from hatchway.apiserver.nodes import NodeMonitor, ready_condition
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.errors import ApiError
from hatchway.node.lease import NodeLease
from hatchway.rest import RestClient
from hatchway.transport import tls

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


def _client(server: ApiServer, tmp_path: Path, user: str, groups: list[str]) -> RestClient:
    assert server.paths is not None
    cert, key = pki.mint_component_cert(server.paths.client_ca.parent, user, groups)
    (tmp_path / f"{user}.crt").write_bytes(cert)
    (tmp_path / f"{user}.key").write_bytes(key)
    ctx = tls.client_context(
        ca_file=server.paths.client_ca,
        cert_file=tmp_path / f"{user}.crt",
        key_file=tmp_path / f"{user}.key",
    )
    return RestClient(f"https://127.0.0.1:{server.port}", ssl_context=ctx)


@pytest.fixture
async def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with ApiServer(ApiServerConfig(data_dir=tmp_path / "data", port=0)) as srv:
        yield srv


def _node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


async def test_the_node_lease_is_created_owned_and_renewed(server: ApiServer, tmp_path) -> None:
    n1 = _client(server, tmp_path, "system:node:n1", ["system:nodes"])
    heartbeat = NodeLease(n1, "n1", interval=0.05)
    await heartbeat.renew()  # before the Node exists: no owner yet
    first = await n1.get(f"{LEASES.format(ns='kube-node-lease')}/n1")
    assert first["spec"]["holderIdentity"] == "n1"
    assert first["spec"]["leaseDurationSeconds"] == 40
    assert lease_api.parse_micro(first["spec"]["renewTime"]) is not None
    assert not first["metadata"].get("ownerReferences")
    node = await n1.create("/api/v1/nodes", _node("n1"))
    await asyncio.sleep(0.01)  # MicroTime: the next renewal is a later one
    await heartbeat.renew()
    second = await n1.get(f"{LEASES.format(ns='kube-node-lease')}/n1")
    assert second["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": node["metadata"]["uid"]}
    ]
    assert second["spec"]["renewTime"] > first["spec"]["renewTime"]
    assert heartbeat.renewals == 2
    await n1.aclose()


async def test_a_node_writes_only_its_own_lease(server: ApiServer, tmp_path) -> None:
    n1 = _client(server, tmp_path, "system:node:n1", ["system:nodes"])
    n2 = _client(server, tmp_path, "system:node:n2", ["system:nodes"])
    await NodeLease(n2, "n2").renew()
    body = lease_api.lease_object("kube-node-lease", "n2", {"holderIdentity": "n1"})
    refusals = [
        ("create", LEASES.format(ns="kube-node-lease"), body, "same name as the node"),
        ("replace", f"{LEASES.format(ns='kube-node-lease')}/n2", body, "same name as the node"),
        ("get", f"{LEASES.format(ns='kube-node-lease')}/n2", None, "same name as the node"),
        ("get", LEASES.format(ns="kube-node-lease"), None, "cannot list"),  # RBAC: no list
        ("delete", f"{LEASES.format(ns='kube-node-lease')}/n2", None, "same name as the node"),
        ("get", f"{LEASES.format(ns='kube-system')}/hatchway-controller-manager", None, "only"),
        (
            "create",
            LEASES.format(ns="default"),
            lease_api.lease_object("default", "n1", {}),
            "can only access leases in kube-node-lease",
        ),
    ]
    for method, path, payload, words in refusals:
        call = getattr(n1, method)
        with pytest.raises(ApiError) as caught:
            await (call(path, payload) if payload is not None else call(path))
        assert caught.value.code == 403, (method, path)
        assert words in str(caught.value), (method, path, str(caught.value))
    theirs = await n2.get(f"{LEASES.format(ns='kube-node-lease')}/n2")
    assert theirs["spec"]["holderIdentity"] == "n2"  # untouched
    await n1.aclose()
    await n2.aclose()


async def test_a_renewed_lease_keeps_a_node_ready(server: ApiServer, tmp_path) -> None:
    """The Node's own heartbeat stops; its Lease's renewals alone keep it Ready; when
    they stop too, the node lifecycle marks it NotReady."""
    n1 = _client(server, tmp_path, "system:node:n1", ["system:nodes"])
    beat = {"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T00:00:00Z"}
    await n1.create("/api/v1/nodes", {**_node("n1"), "status": {"conditions": [beat]}})
    assert server.store is not None
    grace = 1.0 * SCALE
    monitor = NodeMonitor(server.store, grace=grace, interval=0.05)
    heartbeat = NodeLease(n1, "n1", interval=0.05)
    renewing = asyncio.get_running_loop().create_task(heartbeat.run())
    try:
        start = time.monotonic()
        while time.monotonic() - start < 3 * grace:  # well past the grace, renewals only
            assert await monitor.check_once() == []
            await asyncio.sleep(0.05)
        assert heartbeat.renewals >= 3
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
    async with asyncio.timeout(20 * SCALE):
        while not await monitor.check_once():
            await asyncio.sleep(0.05)
    node = await server.store.get("nodes", "", "n1")
    assert ready_condition(node)["status"] == "Unknown"  # type: ignore[index]
    await n1.aclose()

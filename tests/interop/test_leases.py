"""Leases as kubectl sees them (issue 14, protocol.md 11): with every bundled kubectl,
``kubectl get leases -A`` lists the node agent's heartbeat Lease in kube-node-lease, the
controllers' leader Lease and the API server's identity Lease in kube-system, with the
HOLDER column; a Lease is created, read and deleted, and an invalid one refused."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from cluster import SCALE, Cluster
from interop.support import Kubectl

pytestmark = pytest.mark.runc


def _node_lease(cluster: Cluster) -> None:
    """The node agent's first renewal has happened (it starts with the agent)."""
    deadline = time.monotonic() + 30 * SCALE
    while cluster.kubectl("get", "lease", "-n", "kube-node-lease", cluster.node_name).returncode:
        assert time.monotonic() < deadline, "no node lease"
        time.sleep(0.2)


def test_get_leases_all_namespaces(cluster: Cluster, kubectl: Kubectl) -> None:
    _node_lease(cluster)
    done = kubectl("get", "leases", "-A")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "HOLDER", "AGE"]
    rows = {(cols[0], cols[1]): cols for cols in (line.split() for line in lines[1:])}
    node = rows[("kube-node-lease", cluster.node_name)]
    assert node[2] == cluster.node_name  # the node's own name holds its Lease
    leader = rows[("kube-system", "hatchway-controller-manager")]
    assert leader[2].count("_") == 1  # hostname_uuid of the one API server
    identities = [cols for (ns, name), cols in rows.items() if name.startswith("apiserver-")]
    assert [cols[0] for cols in identities] == ["kube-system"]
    assert identities[0][2] == leader[2]  # the same process holds both


def test_the_node_lease_is_owned_by_its_node(cluster: Cluster, kubectl: Kubectl) -> None:
    _node_lease(cluster)
    done = kubectl("get", "lease", "-n", "kube-node-lease", cluster.node_name, "-o", "json")
    assert done.returncode == 0, done.stderr
    lease = json.loads(done.stdout)
    assert lease["apiVersion"] == "coordination.k8s.io/v1"
    assert lease["spec"]["leaseDurationSeconds"] == 40
    (owner,) = lease["metadata"]["ownerReferences"]
    node = cluster.get("node", cluster.node_name)
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Node",
        cluster.node_name,
        node["metadata"]["uid"],
    )


def test_create_get_delete_and_an_invalid_lease(cluster: Cluster, kubectl: Kubectl) -> None:
    name = f"lock-{uuid.uuid4().hex[:6]}"
    manifest = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": "me",
            "leaseDurationSeconds": 15,
            "renewTime": "2025-01-01T00:00:00.000000Z",
        },
    }
    created = kubectl("create", "-f", "-", input=json.dumps(manifest).encode())
    assert created.returncode == 0, created.stderr
    got = kubectl("get", "lease", name, "-o", "jsonpath={.spec.holderIdentity}")
    assert (got.returncode, got.stdout) == (0, b"me"), got.stderr
    bad = {**manifest, "metadata": {"name": name + "-bad"}}
    bad["spec"] = {**manifest["spec"], "leaseDurationSeconds": 0}
    refused = kubectl("create", "-f", "-", input=json.dumps(bad).encode())
    assert refused.returncode == 1
    assert b"spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0" in refused.stderr
    deleted = kubectl("delete", "lease", name)
    assert deleted.returncode == 0, deleted.stderr

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hatchway.api.table import age, human_duration, table, wants_table

NOW = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)


def ts(delta: timedelta) -> str:
    return (NOW - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 120, "3h2m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (730 * 86400, "2y"),
        (731 * 86400, "2y1d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_age_unknown():
    assert age(None, NOW) == "<unknown>"
    assert age(ts(timedelta(minutes=5)), NOW) == "5m"


def pod(name, **status):
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": "default",
            "creationTimestamp": ts(timedelta(seconds=42)),
        },
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
        "status": status,
    }


def test_pod_table():
    running = pod(
        "web",
        phase="Running",
        podIP="10.0.0.5",
        containerStatuses=[
            {"name": "a", "ready": True, "restartCount": 1, "state": {"running": {}}},
            {
                "name": "b",
                "ready": False,
                "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            },
        ],
    )
    pending = pod("new", phase="Pending")
    t = table("pods", [running, pending], now=NOW, resource_version="7")
    assert list(t) == ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]
    assert (t["kind"], t["apiVersion"], t["metadata"]) == (
        "Table",
        "meta.k8s.io/v1",
        {"resourceVersion": "7"},
    )
    cols = t["columnDefinitions"]
    assert [c["name"] for c in cols if c["priority"] == 0] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert [c["name"] for c in cols if c["priority"] == 1][:2] == ["IP", "Node"]
    assert list(cols[0]) == ["name", "type", "format", "description", "priority"]
    assert t["rows"][0]["cells"] == [
        "web",
        "1/2",
        "CrashLoopBackOff",
        "3",
        "42s",
        "10.0.0.5",
        "n1",
        "<none>",
        "<none>",
    ]
    assert t["rows"][1]["cells"][:5] == ["new", "0/2", "Pending", "0", "42s"]
    obj = t["rows"][0]["object"]
    assert obj["kind"] == "PartialObjectMetadata" and obj["apiVersion"] == "meta.k8s.io/v1"
    assert obj["metadata"]["name"] == "web"


def test_pod_terminating_and_completed():
    done = pod(
        "job",
        phase="Succeeded",
        containerStatuses=[
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "state": {"terminated": {"exitCode": 3}}},
        ],
    )
    cells = table("pods", [done], now=NOW)["rows"][0]["cells"]
    assert cells[2] == "Completed"
    dying = pod("x", phase="Running")
    dying["metadata"]["deletionTimestamp"] = ts(timedelta(0))
    assert table("pods", [dying], now=NOW)["rows"][0]["cells"][2] == "Terminating"


def test_include_object():
    p = pod("a", phase="Running")
    assert table("pods", [p], now=NOW, include_object="Object")["rows"][0]["object"] == p
    assert "object" not in table("pods", [p], now=NOW, include_object="None")["rows"][0]


def test_node_table():
    node = {
        "metadata": {
            "name": "n1",
            "creationTimestamp": ts(timedelta(days=3)),
            "labels": {"node-role.kubernetes.io/control-plane": ""},
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"kubeletVersion": "v1.32.4-hatchway", "osImage": "Debian"},
            "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}],
        },
    }
    cells = table("nodes", [node], now=NOW)["rows"][0]["cells"]
    assert cells[:5] == [
        "n1",
        "Ready,SchedulingDisabled",
        "control-plane",
        "3d",
        "v1.32.4-hatchway",
    ]
    assert cells[5:8] == ["10.1.1.1", "<none>", "Debian"]


def test_namespace_and_rbac_tables():
    ns = {
        "metadata": {"name": "dev", "creationTimestamp": ts(timedelta(hours=5))},
        "status": {"phase": "Active"},
    }
    assert table("namespaces", [ns], now=NOW)["rows"][0]["cells"] == ["dev", "Active", "5h"]
    role = {"metadata": {"name": "r", "creationTimestamp": "2025-01-01T00:00:00Z"}}
    t = table("roles", [role], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Created At"]
    assert t["columnDefinitions"][1]["type"] == "date"
    assert t["rows"][0]["cells"] == ["r", "2025-01-01T00:00:00Z"]
    rb = {
        "metadata": {"name": "b", "creationTimestamp": ts(timedelta(minutes=1))},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"},
        ],
    }
    cells = table("rolebindings", [rb], now=NOW)["rows"][0]["cells"]
    assert cells == ["b", "ClusterRole/view", "60s", "alice", "devs", "ns:sa"]


def test_wants_table():
    kubectl = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,"
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    )
    assert wants_table(kubectl)
    assert not wants_table("application/json, */*")
    assert not wants_table("application/json,application/json;as=Table;v=v1;g=meta.k8s.io")
    assert not wants_table("")

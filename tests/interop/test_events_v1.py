"""events.k8s.io/v1 and ExecDenied as kubectl sees them (issue 12, protocol.md 2.10):
``kubectl get events.v1.events.k8s.io`` lists the core/v1 events in the other group's
names, create/get/patch/delete work in that group with every bundled kubectl, and a
refused exec into a privileged pod is a Warning ``ExecDenied`` under ``kubectl describe``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from cluster import SCALE, Cluster
from interop.support import SLEEP, Kubectl, Users, container, pod_manifest

pytestmark = pytest.mark.runc

V1 = "events.v1.events.k8s.io"


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> dict[str, Any]:
    name = f"ev1-{uuid.uuid4().hex[:6]}"
    cluster.apply_pod(pod_manifest(name, {"containers": [container("main", SLEEP)]}))
    cluster.wait_phase(name)
    return cluster.get("pod", name)


def _event(pod: dict[str, Any], name: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "example.com/probe",
        "reportingInstance": "probe-1",
        "action": "Probing",
        "reason": "Probed",
        "note": "probed through events.k8s.io",
        "type": "Normal",
        "regarding": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": "default",
            "uid": meta["uid"],
        },
    }


def _json(done: Any) -> Any:
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_get_lists_the_pods_events_in_events_k8s_io_names(
    kubectl: Kubectl, running: dict[str, Any]
) -> None:
    name = running["metadata"]["name"]
    listed = kubectl("get", V1, "--field-selector", f"regarding.name={name}")
    assert listed.returncode == 0, listed.stderr.decode()
    text = listed.stdout.decode()
    assert text.split()[:5] == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT"]
    assert f"pod/{name}" in text and "Scheduled" in text
    items = _json(kubectl("get", V1, "--field-selector", f"regarding.name={name}", "-o", "json"))
    started = [e for e in items["items"] if e["reason"] == "Started"]
    assert started and started[0]["apiVersion"] == "events.k8s.io/v1"
    assert started[0]["regarding"]["uid"] == running["metadata"]["uid"]
    assert started[0]["note"] == "Started container main"
    assert started[0]["deprecatedSource"]["component"] == "kubelet"
    assert "involvedObject" not in started[0] and "message" not in started[0]


def test_create_get_patch_delete(
    cluster: Cluster, kubectl: Kubectl, running: dict[str, Any]
) -> None:
    name = f"probe-{kubectl.version.replace('.', '')}-{uuid.uuid4().hex[:4]}"
    made = kubectl("create", "-f", "-", input=json.dumps(_event(running, name)).encode())
    assert made.returncode == 0, made.stderr.decode()
    core = _json(cluster.kubectl("get", "event", name, "-o", "json"))
    assert core["involvedObject"]["name"] == running["metadata"]["name"]
    assert (core["message"], core["reportingComponent"]) == (
        "probed through events.k8s.io",
        "example.com/probe",
    )
    patch = {"note": "patched", "series": {"count": 2, "lastObservedTime": "2025-01-01T00:01:00Z"}}
    patched = kubectl("patch", V1, name, "--type", "merge", "-p", json.dumps(patch))
    assert patched.returncode == 0, patched.stderr.decode()
    got = _json(kubectl("get", V1, name, "-o", "json"))
    assert (got["note"], got["series"]["count"]) == ("patched", 2)
    assert _json(cluster.kubectl("get", "event", name, "-o", "json"))["message"] == "patched"
    deleted = kubectl("delete", V1, name)
    assert deleted.returncode == 0, deleted.stderr.decode()
    gone = cluster.kubectl("get", "event", name)
    assert gone.returncode != 0 and b"NotFound" in gone.stderr


def test_a_create_without_what_events_k8s_io_requires_is_invalid(kubectl: Kubectl) -> None:
    bare = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "bare"}}
    done = kubectl("create", "-f", "-", input=json.dumps(bare).encode())
    assert done.returncode != 0
    assert b"eventTime: Required value" in done.stderr
    assert b"reportingController: Required value" in done.stderr


# -- ExecDenied -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def privileged(cluster: Cluster) -> str:
    name = f"ev1-priv-{uuid.uuid4().hex[:6]}"
    spec = {"containers": [container("main", SLEEP, securityContext={"privileged": True})]}
    cluster.apply_pod(pod_manifest(name, spec))
    cluster.wait_phase(name)
    return name


def _denials(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl(
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name},reason=ExecDenied",
        "-o",
        "json",
    )
    return _json(listed)["items"]


def test_a_refused_exec_is_an_exec_denied_warning_on_the_pod(
    cluster: Cluster, kubectl: Kubectl, users: Users, privileged: str
) -> None:
    before = sum(int(e.get("count") or 1) for e in _denials(cluster, privileged))
    refused = kubectl("exec", privileged, "--", "true", kubeconfig=users.editor)
    assert refused.returncode != 0
    assert b"cannot exec into or attach to a privileged container" in refused.stderr
    deadline = time.monotonic() + 10 * SCALE
    while True:
        denials = _denials(cluster, privileged)
        if sum(int(e.get("count") or 1) for e in denials) > before:
            break
        assert time.monotonic() < deadline, denials
        time.sleep(0.2)
    editor = users.names["editor"]
    mine = [e for e in denials if f'by user "{editor}"' in e["message"]]
    assert mine and mine[0]["type"] == "Warning"
    described = kubectl("describe", "pod", privileged)
    assert described.returncode == 0, described.stderr.decode()
    events = described.stdout.decode()
    events = events[events.index("Events:") :]
    assert "Warning  ExecDenied" in events
    assert "refused: cannot exec into or attach to a privileged container" in " ".join(
        events.split()
    )
    # The admin's exec is not refused, and records nothing.
    count = sum(int(e.get("count") or 1) for e in _denials(cluster, privileged))
    assert kubectl("exec", privileged, "--", "true").returncode == 0
    assert sum(int(e.get("count") or 1) for e in _denials(cluster, privileged)) == count

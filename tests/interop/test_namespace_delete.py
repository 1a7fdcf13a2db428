"""``kubectl delete namespace`` with a running pod, as on Kubernetes (issue 12): the
namespace is Terminating while the node stops the pod, nothing new can be created in it,
and when kubectl's wait ends no process of the pod is left on the machine."""

from __future__ import annotations

import json
import pathlib
import uuid

import pytest

from cluster import Cluster
from interop.support import Kubectl, container, pod_manifest

pytestmark = pytest.mark.runc


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_delete_namespace_stops_its_pods_first(cluster: Cluster, kubectl: Kubectl) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:6]}"
    token = f"token-{uuid.uuid4().hex}"
    cluster.apply_pod({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    # It ignores SIGTERM, so it lives out its grace period: the namespace is Terminating
    # for those 3 s at least, and only the node's SIGKILL ends it.
    loop = ["sh", "-c", "trap '' TERM; while :; do sleep 1; done", token]
    manifest = pod_manifest("looper", {"containers": [container("main", loop)]})
    manifest["spec"]["terminationGracePeriodSeconds"] = 3
    manifest["metadata"]["namespace"] = namespace
    cluster.apply_pod(manifest)
    cluster.wait_phase("looper", namespace=namespace)
    assert _processes_with(token), "the pod's process should run"

    started = kubectl("delete", "namespace", namespace, "--wait=false")
    assert started.returncode == 0, started.stderr
    phase = kubectl("get", "namespace", namespace, "-o", "jsonpath={.status.phase}")
    assert (phase.returncode, phase.stdout) == (0, b"Terminating"), phase.stderr
    late = kubectl("run", "late", "-n", namespace, "--image=busybox", "--", "true")
    assert late.returncode != 0
    assert b"because it is being terminated" in late.stderr, late.stderr
    waited = kubectl("wait", "--for=delete", f"namespace/{namespace}", "--timeout=60s")
    assert waited.returncode == 0 or b"not found" in waited.stderr, waited.stderr
    assert _processes_with(token) == []
    gone = cluster.kubectl("get", "pods", "-n", namespace, "-o", "json")
    assert gone.returncode != 0 or json.loads(gone.stdout)["items"] == []

"""Issue 9, findings 2 and 3: a client-chosen ``metadata.uid`` never reaches a host path,
and a pod's containers are found by its uid, never by a reused namespace/name.

Both run as the ``attacker`` (an ``edit`` user) with the real kubectl against the real
cluster and runc.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
import uuid

import pytest

from cluster import SCALE, Cluster
from security.conftest import Attacker, pod_manifest

pytestmark = pytest.mark.runc

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
#: More effective capabilities than the runtime's default set (14, as containerd grants)
#: means a privileged container (all of the host's, 40 or so).
DEFAULT_CAPS_MAX = 16


def _wait_gone(attacker: Attacker, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        result = attacker.kubectl("get", "pod", name, "-o", "name")
        if result.returncode != 0 and b"NotFound" in result.stderr:
            return
        time.sleep(0.2)
    raise AssertionError(f"pod {name} still exists")


def _wait_running(attacker: Attacker, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout * SCALE
    pod: dict = {}
    while time.monotonic() < deadline:
        pod = attacker.get("pod", name)
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if statuses and all("running" in (s.get("state") or {}) for s in statuses):
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {name} not running: {json.dumps(pod.get('status'))}")


def test_client_uid_is_replaced_and_never_a_host_path(
    attacker: Attacker, tmp_path: pathlib.Path
) -> None:
    """Finding 2: ``uid: /tmp/<dir>`` must not put the emptyDir there, nor remove it."""
    target = tmp_path / "host-dir"
    target.mkdir()
    (target / "keep").write_text("precious")
    name = f"uid-{uuid.uuid4().hex[:6]}"
    manifest = pod_manifest(
        name,
        attacker.namespace,
        spec={"volumes": [{"name": "scratch", "emptyDir": {}}]},
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    manifest["metadata"]["uid"] = str(target)
    created = attacker.create(manifest)
    assert created.returncode == 0, created.stderr.decode()
    pod = _wait_running(attacker, name)
    stored = pod["metadata"]["uid"]
    assert UUID.fullmatch(stored), stored
    wrote = attacker.kubectl("exec", name, "--", "touch", "/scratch/planted")
    assert wrote.returncode == 0, wrote.stderr.decode()
    assert sorted(p.name for p in target.iterdir()) == ["keep"]
    deleted = attacker.kubectl("delete", "pod", name, "--wait=true", timeout=120)
    assert deleted.returncode == 0, deleted.stderr.decode()
    _wait_gone(attacker, name)
    assert (target / "keep").read_text() == "precious"


def test_client_uid_of_another_pod_is_not_taken(attacker: Attacker) -> None:
    """A client that copies a live pod's uid gets a fresh one (no shared volume dir)."""
    first = f"uid-a-{uuid.uuid4().hex[:6]}"
    assert attacker.create(pod_manifest(first, attacker.namespace)).returncode == 0
    uid = attacker.get("pod", first)["metadata"]["uid"]
    second = pod_manifest(f"uid-b-{uuid.uuid4().hex[:6]}", attacker.namespace)
    second["metadata"]["uid"] = uid
    created = attacker.create(second)
    assert created.returncode == 0, created.stderr.decode()
    assert attacker.get("pod", second["metadata"]["name"])["metadata"]["uid"] != uid
    attacker.kubectl("delete", "pod", first, second["metadata"]["name"], "--wait=false")


def _privileged_stubborn_pod(name: str, namespace: str) -> dict:
    manifest = pod_manifest(
        name,
        namespace,
        spec={"terminationGracePeriodSeconds": 600},
        command=["sh", "-c", 'trap "" TERM; while true; do sleep 1; done'],
        securityContext={"privileged": True},
    )
    return manifest


def _cap_count(text: str) -> int | None:
    """How many capabilities ``CapEff`` of a /proc/PID/status text holds."""
    found = re.search(r"^CapEff:\s*([0-9a-f]+)$", text, re.MULTILINE)
    return None if found is None else bin(int(found.group(1), 16)).count("1")


def _exec_status(attacker: Attacker, name: str) -> tuple[int, str]:
    result = attacker.kubectl("exec", name, "-c", "main", "--", "cat", "/proc/self/status")
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def test_exec_never_lands_in_a_force_deleted_pods_container(
    cluster: Cluster, attacker: Attacker
) -> None:
    """Finding 3: the admin's privileged pod is force-deleted while its container still
    stops (it ignores SIGTERM, 600 s grace); the attacker's plain pod of the same name
    must get its own container, and exec must land there or be refused."""
    name = f"reuse-{uuid.uuid4().hex[:6]}"
    ns = attacker.namespace
    cluster.apply_pod(_privileged_stubborn_pod(name, ns))
    cluster.wait_phase(name, namespace=ns)
    old_uid = cluster.get("pod", name, "-n", ns)["metadata"]["uid"]
    graceful = cluster.kubectl("delete", "pod", name, "-n", ns, "--wait=false")
    assert graceful.returncode == 0, graceful.stderr.decode()
    time.sleep(1.0)  # the node has sent SIGTERM: the container is stopping
    forced = cluster.kubectl("delete", "pod", name, "-n", ns, "--grace-period=0", "--force")
    assert forced.returncode == 0, forced.stderr.decode()
    plain = pod_manifest(name, ns)
    plain["metadata"]["uid"] = old_uid  # and even naming the old uid does not help
    created = attacker.create(plain)
    assert created.returncode == 0, created.stderr.decode()
    deadline = time.monotonic() + 30 * SCALE
    code, text = _exec_status(attacker, name)
    try:
        while code != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            code, text = _exec_status(attacker, name)
        caps = _cap_count(text)
        assert caps is None or caps <= DEFAULT_CAPS_MAX, f"landed in the old container:\n{text}"
        # Nor may the node stall on the old pod's grace period: the new pod runs.
        assert code == 0, text
        assert caps is not None, text
    finally:
        attacker.kubectl("delete", "pod", name, "--grace-period=0", "--force")


def test_exec_never_lands_in_a_deleted_pods_container_while_the_node_is_busy(
    cluster: Cluster, attacker: Attacker
) -> None:
    """Finding 3, the attacker's way: its own pod that ignores SIGTERM keeps the node busy
    stopping it while the admin force-deletes a privileged pod in the same namespace; the
    attacker's pod of that name must not get the privileged container on exec."""
    ns = attacker.namespace
    stall = f"stall-{uuid.uuid4().hex[:6]}"
    stubborn = pod_manifest(
        stall,
        ns,
        spec={"terminationGracePeriodSeconds": 30},
        command=["sh", "-c", 'trap "" TERM; while true; do sleep 1; done'],
    )
    assert attacker.create(stubborn).returncode == 0
    name = f"victim-{uuid.uuid4().hex[:6]}"
    cluster.apply_pod(_privileged_stubborn_pod(name, ns))
    cluster.wait_phase(name, namespace=ns)
    _wait_running(attacker, stall)
    try:
        assert attacker.kubectl("delete", "pod", stall, "--wait=false").returncode == 0
        time.sleep(1.0)  # the node is now stopping the stubborn pod
        forced = cluster.kubectl("delete", "pod", name, "-n", ns, "--grace-period=0", "--force")
        assert forced.returncode == 0, forced.stderr.decode()
        assert attacker.create(pod_manifest(name, ns)).returncode == 0
        deadline = time.monotonic() + 20 * SCALE
        code, text = _exec_status(attacker, name)
        while code != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            code, text = _exec_status(attacker, name)
        caps = _cap_count(text)
        assert caps is None or caps <= DEFAULT_CAPS_MAX, f"landed in the old container:\n{text}"
        assert code == 0, text
    finally:
        attacker.kubectl("delete", "pod", name, stall, "--grace-period=0", "--force")

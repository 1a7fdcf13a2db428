"""Events as kubectl shows them (issue 12): a pod's life (Scheduled, Pulled, Created,
Started, Killing) under ``kubectl describe pod``, in ``kubectl get events`` and in
``kubectl events --for``, with every bundled kubectl."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import uuid

import pytest

from cluster import SCALE, Cluster
from interop.support import SLEEP, Kubectl, container, pod_manifest

pytestmark = pytest.mark.runc


def _reasons(cluster: Cluster, name: str, wanted: set[str]) -> list[str]:
    deadline = time.monotonic() + 30 * SCALE
    while True:
        listed = cluster.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        )
        assert listed.returncode == 0, listed.stderr
        reasons = [e["reason"] for e in json.loads(listed.stdout)["items"]]
        if wanted <= set(reasons) or time.monotonic() > deadline:
            return reasons
        time.sleep(0.2)


@pytest.fixture(scope="module")
def lived(cluster: Cluster) -> str:
    name = f"ev-{uuid.uuid4().hex[:6]}"
    cluster.apply_pod(pod_manifest(name, {"containers": [container("main", SLEEP)]}))
    cluster.wait_phase(name)
    assert {"Scheduled", "Pulled", "Created", "Started"} <= set(
        _reasons(cluster, name, {"Scheduled", "Pulled", "Created", "Started"})
    )
    return name


def test_describe_get_and_events_show_the_pods_life(
    cluster: Cluster, kubectl: Kubectl, lived: str
) -> None:
    described = kubectl("describe", "pod", lived)
    assert described.returncode == 0, described.stderr
    text = described.stdout.decode()
    events = text[text.index("Events:") :]
    assert "Events:  <none>" not in events
    assert f"Successfully assigned default/{lived} to" in events
    assert "Started container main" in events
    listed = kubectl("get", "events", "--field-selector", f"involvedObject.name={lived}")
    assert listed.returncode == 0, listed.stderr
    assert f"pod/{lived}" in listed.stdout.decode() and "Scheduled" in listed.stdout.decode()
    if kubectl.version != "1.27":  # 'kubectl events' is alpha there
        shown = kubectl("events", "--for", f"pod/{lived}")
        assert shown.returncode == 0, shown.stderr
        assert "Created container: main" in shown.stdout.decode()


def test_deleting_a_pod_records_killing(cluster: Cluster) -> None:
    name = f"ev-kill-{uuid.uuid4().hex[:6]}"
    cluster.apply_pod(pod_manifest(name, {"containers": [container("main", SLEEP)]}))
    cluster.wait_phase(name)
    assert cluster.kubectl("delete", "pod", name, "--wait=true").returncode == 0
    assert "Killing" in _reasons(cluster, name, {"Killing"})


def test_an_unschedulable_pod_says_why(cluster: Cluster) -> None:
    name = f"ev-nowhere-{uuid.uuid4().hex[:6]}"
    manifest = pod_manifest(name, {"containers": [container("main", SLEEP)]})
    manifest["spec"]["nodeSelector"] = {"no-such": "label"}
    cluster.apply_pod(manifest)
    try:
        assert "FailedScheduling" in _reasons(cluster, name, {"FailedScheduling"})
        described = cluster.kubectl("describe", "pod", name).stdout.decode()
        assert "didn't match Pod's node affinity/selector" in described
    finally:
        cluster.kubectl("delete", "pod", name, "--wait=false")


def test_a_crashing_container_and_a_missing_image_record_backoff_and_failed(
    cluster: Cluster,
) -> None:
    crashing = f"ev-crash-{uuid.uuid4().hex[:6]}"
    missing = f"ev-noimg-{uuid.uuid4().hex[:6]}"
    cluster.apply_pod(pod_manifest(crashing, {"containers": [container("main", ["false"])]}))
    unpullable = {**container("main", SLEEP), "image": "registry.invalid/nope:1"}
    cluster.apply_pod(pod_manifest(missing, {"containers": [unpullable]}))
    try:
        assert "BackOff" in _reasons(cluster, crashing, {"BackOff"})
        described = cluster.kubectl("describe", "pod", crashing).stdout.decode()
        assert "Back-off restarting failed container main" in described
        reasons = _reasons(cluster, missing, {"Failed", "BackOff"})
        assert {"Failed", "BackOff"} <= set(reasons), reasons
        described = cluster.kubectl("describe", "pod", missing).stdout.decode()
        assert 'Failed to pull image "registry.invalid/nope:1"' in described
        assert 'Back-off pulling image "registry.invalid/nope:1"' in described
    finally:
        cluster.kubectl("delete", "pod", crashing, missing, "--wait=false")


def test_get_events_watch_shows_them_as_they_happen(cluster: Cluster, kubectl: Kubectl) -> None:
    """``kubectl get events -w``: the watch prints a pod's events as the node records them."""
    name = f"ev-w-{uuid.uuid4().hex[:6]}"
    argv = kubectl.argv("get", "events", "-w", "--field-selector", f"involvedObject.name={name}")
    watch = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=kubectl.env)
    lines: list[str] = []
    try:
        time.sleep(1.0 * SCALE)  # the watch is open before the pod exists
        cluster.apply_pod(pod_manifest(name, {"containers": [container("main", SLEEP)]}))
        deadline = time.monotonic() + 60 * SCALE
        assert watch.stdout is not None
        os.set_blocking(watch.stdout.fileno(), False)
        buffered = b""
        while time.monotonic() < deadline and not any("Started" in line for line in lines):
            ready, _, _ = select.select([watch.stdout], [], [], 0.5)
            if ready:
                buffered += watch.stdout.read() or b""
                *done, buffered = buffered.split(b"\n")
                lines += [line.decode() for line in done]
        assert any("Scheduled" in line and f"pod/{name}" in line for line in lines), lines
        assert any("Started" in line for line in lines), lines
    finally:
        watch.kill()
        watch.wait()
        cluster.kubectl("delete", "pod", name, "--wait=false")

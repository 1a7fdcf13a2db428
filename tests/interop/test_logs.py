"""``kubectl logs`` over CRI-format container logs, with every bundled kubectl:
``--timestamps``, ``--since``/``--since-time`` per line, ``--tail``, ``--limit-bytes``,
``-f``, ``-p`` (the previous instance, kept across a restart) and the kubelet's 400
texts for a container with no previous instance or none started yet."""

from __future__ import annotations

import calendar
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cluster import SCALE, Cluster
from interop.support import Kubectl, container, pod_manifest

pytestmark = pytest.mark.runc

STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"
#: Two lines, 1.5 s apart, then silence; then a line on stderr.
SLOW = ["sh", "-c", "echo early; sleep 1.5; echo late; echo oops >&2; exec sleep 86400"]
#: Counts its instances in an emptyDir, prints which one it is, then crashes.
COUNTER = [
    "sh",
    "-c",
    "n=$(cat /v/n 2>/dev/null || echo 0); n=$((n+1)); echo $n >/v/n; echo instance $n; "
    "sleep 1; exit 1",
]


@dataclass
class LogPods:
    slow: str
    crasher: str
    no_image: str


@pytest.fixture(scope="module")
def log_pods(cluster: Cluster) -> Iterator[LogPods]:
    suffix = uuid.uuid4().hex[:6]
    chosen = LogPods(f"slow-{suffix}", f"crasher-{suffix}", f"noimage-{suffix}")
    cluster.apply_pod(pod_manifest(chosen.slow, {"containers": [container("main", SLOW)]}))
    crasher = container("main", COUNTER, volumeMounts=[{"name": "v", "mountPath": "/v"}])
    cluster.apply_pod(
        pod_manifest(
            chosen.crasher, {"containers": [crasher], "volumes": [{"name": "v", "emptyDir": {}}]}
        )
    )
    cluster.apply_pod(
        pod_manifest(
            chosen.no_image,
            {"containers": [{"name": "main", "image": "no-such-image:1", "command": ["true"]}]},
        )
    )
    cluster.wait_phase(chosen.slow)
    deadline = time.monotonic() + 60 * SCALE
    while b"late" not in cluster.kubectl("logs", chosen.slow).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    yield chosen
    cluster.kubectl("delete", "pod", "--wait=false", chosen.slow, chosen.crasher, chosen.no_image)


def _restarted(cluster: Cluster, name: str) -> None:
    """Wait until the pod's container restarted once (the back-off is 10 s)."""
    deadline = time.monotonic() + 90 * SCALE
    while True:
        statuses = cluster.get("pod", name).get("status", {}).get("containerStatuses") or [{}]
        if int(statuses[0].get("restartCount") or 0) >= 1:
            return
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)


def _seconds(stamp: bytes) -> float:
    whole = calendar.timegm(time.strptime(stamp[:19].decode(), "%Y-%m-%dT%H:%M:%S"))
    return whole + float(stamp[19:-1])


def test_timestamps(kubectl: Kubectl, log_pods: LogPods) -> None:
    result = kubectl("logs", log_pods.slow, "--timestamps")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(b" ", 1)[1] for line in lines] == [b"early", b"late", b"oops"]
    assert all(re.fullmatch(STAMP + rb" \S+", line) for line in lines), lines


def test_since_time_and_since(kubectl: Kubectl, log_pods: LogPods) -> None:
    stamped = kubectl("logs", log_pods.slow, "--timestamps").stdout.splitlines()
    late_time = stamped[1].split(b" ")[0].decode()
    result = kubectl("logs", log_pods.slow, f"--since-time={late_time}")
    assert (result.returncode, result.stdout) == (0, b"late\noops\n"), result.stderr
    result = kubectl("logs", log_pods.slow, "--since=1h")
    assert (result.returncode, result.stdout) == (0, b"early\nlate\noops\n")
    last = _seconds(stamped[-1].split(b" ")[0])
    time.sleep(max(0.0, last + 1.5 - time.time()))
    result = kubectl("logs", log_pods.slow, "--since=1s")  # written over a second ago
    assert (result.returncode, result.stdout) == (0, b""), result.stderr


def test_tail_limit_follow(kubectl: Kubectl, log_pods: LogPods) -> None:
    result = kubectl("logs", log_pods.slow, "--tail=2")
    assert (result.returncode, result.stdout) == (0, b"late\noops\n")
    result = kubectl("logs", log_pods.slow, "--limit-bytes=8", "--timestamps=false")
    assert (result.returncode, result.stdout) == (0, b"early\nla")
    result = kubectl("logs", log_pods.slow, "-f", "--tail=1", "--limit-bytes=5")
    assert (result.returncode, result.stdout) == (0, b"oops\n")


def test_previous(kubectl: Kubectl, log_pods: LogPods) -> None:
    _restarted(kubectl.cluster, log_pods.crasher)
    result = kubectl("logs", log_pods.crasher, "-p")
    assert result.returncode == 0, result.stderr
    previous = int(result.stdout.split()[1])
    current = kubectl("logs", log_pods.crasher)
    if current.returncode == 0 and current.stdout:
        assert int(current.stdout.split()[1]) == previous + 1
    assert re.fullmatch(rb"instance \d+\n", result.stdout)
    result = kubectl("logs", log_pods.slow, "--previous")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "Error from server (BadRequest): previous terminated container"
        f' "main" in pod "{log_pods.slow}" not found\n'
    )


def test_waiting_container(kubectl: Kubectl, log_pods: LogPods) -> None:
    result = kubectl("logs", log_pods.no_image)
    assert result.returncode == 1
    text = result.stderr.decode()
    prefix = (
        f'Error from server (BadRequest): container "main" in pod "{log_pods.no_image}"'
        " is waiting to start: "
    )
    assert text.startswith(prefix), text
    assert text[len(prefix) :].strip() in (
        "ContainerCreating",
        "ErrImageNotFound",
        "trying and failing to pull image",
    )

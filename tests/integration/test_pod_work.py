"""Issue 10, item 5: one pod's long graceful stop holds up no other pod work on its node.

A real cluster (API server, node agent, runc): pod A ignores SIGTERM and has a long grace
period; while it is stopping, a new pod starts, another pod is deleted and goes away, and
an exec into a third works -- each within a bound far below A's grace period.
"""

from __future__ import annotations

import time

from cluster import SCALE, Cluster

#: A's grace period. Every bound below is a small fraction of it, so a node that waits
#: for A's stop before other pod work fails them all.
GRACE = 300
#: How long each piece of other pod work may take while A is stopping.
BOUND = 30 * SCALE
STUBBORN = ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]


def _exists(cluster: Cluster, name: str) -> bool:
    result = cluster.kubectl("get", "pod", name, "-o", "name")
    return result.returncode == 0


def test_a_stopping_pod_holds_up_no_other_pod_work(cluster: Cluster) -> None:
    container = {"name": "main", "image": "busybox", "command": STUBBORN}
    a = cluster.pod(containers=[container], terminationGracePeriodSeconds=GRACE)
    c = cluster.pod()
    d = cluster.pod()
    try:
        deleted = cluster.kubectl("delete", "pod", a, "--wait=false")
        assert deleted.returncode == 0, deleted.stderr.decode()
        started = time.monotonic()
        # A is terminating; it ignores SIGTERM, so it goes only when its grace period ends.
        assert cluster.get("pod", a)["metadata"].get("deletionTimestamp")

        t0 = time.monotonic()
        b = cluster.pod(wait=False)
        cluster.wait_phase(b, timeout=BOUND / SCALE)
        b_took = time.monotonic() - t0

        t0 = time.monotonic()
        gone = cluster.kubectl("delete", "pod", c, f"--timeout={int(BOUND)}s", timeout=BOUND * 2)
        c_took = time.monotonic() - t0
        assert gone.returncode == 0, gone.stderr.decode()
        assert not _exists(cluster, c)

        t0 = time.monotonic()
        result = cluster.kubectl("exec", d, "--", "echo", "still served", timeout=BOUND)
        exec_took = time.monotonic() - t0
        assert (result.returncode, result.stdout) == (0, b"still served\n"), result.stderr

        # All of it happened while A was still stopping.
        assert _exists(cluster, a)
        assert time.monotonic() - started < GRACE
        assert max(b_took, c_took, exec_took) < BOUND, (b_took, c_took, exec_took)
    finally:
        # A second delete may shorten the grace period: A goes now, not in 300 s.
        cluster.kubectl("delete", "pod", a, "--grace-period=1", "--timeout=60s", timeout=90)
        cluster.kubectl("delete", "pod", d, "--wait=false")

"""Pod lifecycle rules on the API server: what a new pod starts as, and graceful deletion.

Deletion, as Kubernetes does it:

* a pod never bound to a node, a pod in a terminal phase (Succeeded/Failed), a pod whose
  node is gone, and any delete with ``gracePeriodSeconds: 0`` are removed at once;
* otherwise the pod gets ``metadata.deletionTimestamp`` (now + grace) and
  ``metadata.deletionGracePeriodSeconds`` and stays: the node agent sees it (watch),
  stops the containers, and deletes the pod with grace 0. A second delete may shorten
  the grace period, never lengthen it.

The grace period defaults to the pod's ``spec.terminationGracePeriodSeconds`` (30).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hatchway.api.meta import format_time, parse_time
from hatchway.api.status import StatusError
from hatchway.store.base import Store

DEFAULT_GRACE = 30
RETRIES = 5
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def prepare_create(pod: dict[str, Any]) -> None:
    """A new pod's status is the server's: Pending (kept: the defaulted qosClass)."""
    st = pod.get("status") if isinstance(pod.get("status"), dict) else {}
    pod["status"] = {
        "phase": "Pending",
        **({"qosClass": st["qosClass"]} if "qosClass" in st else {}),
    }


def _grace(pod: dict[str, Any], requested: Any) -> int:
    if requested is None:
        requested = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE)
    try:
        return max(int(requested), 0)
    except (TypeError, ValueError):
        return DEFAULT_GRACE


async def _node_exists(store: Store, name: str) -> bool:
    try:
        await store.get("nodes", "", name)
    except StatusError as exc:
        if exc.code == 404:
            return False
        raise
    return True


async def delete_pod(
    store: Store, namespace: str, name: str, grace_seconds: Any, expect_rv: str | None
) -> dict[str, Any]:
    """Delete or mark for deletion; returns the pod as it now is (or was). Without a
    resourceVersion precondition, a concurrent write (a status update) is retried."""
    for _ in range(RETRIES):
        try:
            return await _delete_pod_once(store, namespace, name, grace_seconds, expect_rv)
        except StatusError as exc:
            if exc.reason != "Conflict" or expect_rv is not None:
                raise
    return await _delete_pod_once(store, namespace, name, grace_seconds, expect_rv)


async def _delete_pod_once(
    store: Store, namespace: str, name: str, grace_seconds: Any, expect_rv: str | None
) -> dict[str, Any]:
    pod = await store.get("pods", namespace, name)
    grace = _grace(pod, grace_seconds)
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    phase = (pod.get("status") or {}).get("phase")
    immediate = (
        grace == 0 or not node or phase in TERMINAL_PHASES or not await _node_exists(store, node)
    )
    if immediate:
        return await store.delete("pods", namespace, name, expect_rv=expect_rv)
    meta = pod["metadata"]
    now = datetime.now(UTC)
    deadline = now + timedelta(seconds=grace)
    current = parse_time(str(meta.get("deletionTimestamp") or ""))
    if current is not None and current <= deadline:
        return pod  # already terminating, at least as soon
    meta["deletionTimestamp"] = format_time(deadline)
    meta["deletionGracePeriodSeconds"] = grace
    return await store.update("pods", pod, expect_rv=expect_rv or meta.get("resourceVersion"))

"""Node health: a node whose agent stops posting status becomes NotReady (Unknown).

The node agent registers its Node and then heartbeats by updating
``status.conditions[type=Ready]`` (``status: "True"``, a fresh ``lastHeartbeatTime``)
through ``PUT/PATCH /api/v1/nodes/NAME/status``. :class:`NodeMonitor` notes, on its own
clock, when each node's heartbeat last *changed*; when that is longer ago than
``grace`` it sets the Ready condition to ``Unknown`` with reason ``NodeStatusUnknown``
and the message ``Kubelet stopped posting node status.``, as Kubernetes' node
lifecycle controller does. Only the observation time counts, never the node's clock.
The next heartbeat makes the node Ready again (the agent writes the condition).

A renewal of the node's Lease ``kube-node-lease/<node>`` (``spec.renewTime`` changed)
counts as a heartbeat too, as for Kubernetes' node lifecycle controller since node
leases (protocol.md 11.5): a node agent may then post its status less often. A node
Lease whose owner Node is gone is deleted, as Kubernetes' garbage collector would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from hatchway.api.meta import format_time
from hatchway.api.status import StatusError
from hatchway.store.base import Store

log = logging.getLogger(__name__)

NOT_POSTING = "Kubelet stopped posting node status."


def ready_condition(node: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (node.get("status") or {}).get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond
    return None


def node_ready(node: dict[str, Any]) -> bool:
    """Ready condition ``True`` and not being deleted."""
    if (node.get("metadata") or {}).get("deletionTimestamp"):
        return False
    cond = ready_condition(node)
    return cond is not None and cond.get("status") == "True"


NODE_LEASE_NAMESPACE = "kube-node-lease"


def _heartbeat(node: dict[str, Any], renewed: str = "") -> str:
    """What changes with every heartbeat: the Ready condition's, and the Lease's
    ``renewTime`` (``renewed``)."""
    cond = ready_condition(node) or {}
    return f"{cond.get('status')}|{cond.get('lastHeartbeatTime')}|{renewed}"


def _renewals(leases: list[dict[str, Any]]) -> dict[str, str]:
    return {
        lease["metadata"]["name"]: str((lease.get("spec") or {}).get("renewTime") or "")
        for lease in leases
    }


class NodeMonitor:
    """Marks nodes Unknown when their heartbeats stop (see module docstring)."""

    def __init__(self, store: Store, *, grace: float = 40.0, interval: float = 5.0) -> None:
        self.store = store
        self.grace = grace
        self.interval = interval
        self._seen: dict[str, tuple[str, float]] = {}

    async def check_once(self) -> list[str]:
        """One pass; the names of the nodes marked NotReady."""
        # Leases first: an owner named by a Lease listed was created before the list of
        # nodes is read, so it is in that list unless it was deleted.
        leases, _ = await self.store.list("leases", NODE_LEASE_NAMESPACE)
        nodes, _ = await self.store.list("nodes")
        renewed = _renewals(leases)
        await self._collect_orphans(leases, nodes)
        now = time.monotonic()
        marked: list[str] = []
        names = set()
        for node in nodes:
            name = node["metadata"]["name"]
            names.add(name)
            beat = _heartbeat(node, renewed.get(name, ""))
            previous = self._seen.get(name)
            if previous is None or previous[0] != beat:
                self._seen[name] = (beat, now)
                continue
            cond = ready_condition(node)
            if cond is None or cond.get("status") == "Unknown":
                continue
            if now - previous[1] > self.grace and await self._mark_unknown(
                node, renewed.get(name, "")
            ):
                marked.append(name)
        for gone in set(self._seen) - names:
            del self._seen[gone]
        return marked

    async def _collect_orphans(
        self, leases: list[dict[str, Any]], nodes: list[dict[str, Any]]
    ) -> None:
        uids = {n["metadata"].get("uid") for n in nodes}
        for lease in leases:
            meta = lease["metadata"]
            owners = [o for o in meta.get("ownerReferences") or () if o.get("kind") == "Node"]
            if owners and not any(o.get("uid") in uids for o in owners):
                try:
                    await self.store.delete(
                        "leases", NODE_LEASE_NAMESPACE, meta["name"],
                        expect_rv=meta.get("resourceVersion"),
                    )  # fmt: skip
                except StatusError:
                    continue  # renewed or gone meanwhile: the next pass decides
                log.info("node lease %s deleted: its Node is gone", meta["name"])

    async def _mark_unknown(self, node: dict[str, Any], renewed: str) -> bool:
        cond = ready_condition(node)
        assert cond is not None
        cond.update(
            status="Unknown",
            reason="NodeStatusUnknown",
            message=NOT_POSTING,
            lastTransitionTime=format_time(datetime.now(UTC)),
        )
        try:
            stored = await self.store.update(
                "nodes", node, expect_rv=node["metadata"].get("resourceVersion")
            )
        except StatusError as exc:
            log.info("node %s not marked NotReady: %s", node["metadata"]["name"], exc)
            return False
        self._seen[stored["metadata"]["name"]] = (_heartbeat(stored, renewed), time.monotonic())
        log.warning("node %s is NotReady: %s", stored["metadata"]["name"], NOT_POSTING)
        return True

    async def run(self) -> None:
        while True:
            with contextlib.suppress(StatusError):
                try:
                    await self.check_once()
                except (OSError, RuntimeError):
                    log.exception("node monitor pass failed")
            await asyncio.sleep(self.interval)

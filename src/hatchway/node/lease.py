"""The node's heartbeat Lease, ``kube-node-lease/<node>`` (the kubelet's nodelease
controller; protocol.md 11.5).

Renewed every ``interval`` (10 s: a quarter of the 40 s ``leaseDurationSeconds``, as the
kubelet does) with ``holderIdentity`` the node's name and an ownerReference to the Node
(added once the Node exists), so that deleting the Node deletes its Lease in Kubernetes'
garbage collector. The API server's node lifecycle takes a renewal as a heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from hatchway.api import lease as lease_api
from hatchway.errors import ApiError, HatchwayError
from hatchway.rest import RestClient

log = logging.getLogger(__name__)

NAMESPACE = "kube-node-lease"
DURATION = 40
INTERVAL = 10.0
RETRY = 1.0


class NodeLease:
    def __init__(
        self,
        rest: RestClient,
        node_name: str,
        *,
        duration: int = DURATION,
        interval: float = INTERVAL,
    ) -> None:
        self.rest = rest
        self.node_name = node_name
        self.duration = duration
        self.interval = interval
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{node_name}"
        self.renewals = 0

    async def _owner(self) -> list[dict[str, Any]]:
        try:
            node = await self.rest.get(f"/api/v1/nodes/{self.node_name}")
        except ApiError as exc:
            if exc.code == 404:
                return []  # not registered yet: the next renewal adds it
            raise
        uid = (node.get("metadata") or {}).get("uid")
        return [{"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": uid}]

    def _spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": self.duration,
            "renewTime": lease_api.format_micro(datetime.now(UTC)),
        }

    async def renew(self) -> None:
        """One renewal: create the Lease if missing, else PUT it with its resourceVersion."""
        try:
            current = await self.rest.get(self.path)
        except ApiError as exc:
            if exc.code != 404:
                raise
            obj = lease_api.lease_object(NAMESPACE, self.node_name, self._spec())
            obj["metadata"]["ownerReferences"] = await self._owner()
            await self.rest.create(self.path.rsplit("/", 1)[0], obj)
            self.renewals += 1
            return
        meta = current.setdefault("metadata", {})
        if not meta.get("ownerReferences"):
            meta["ownerReferences"] = await self._owner()
        current["spec"] = {**(current.get("spec") or {}), **self._spec()}
        await self.rest.replace(self.path, current)
        self.renewals += 1

    async def run(self) -> None:
        while True:
            try:
                await self.renew()
                delay = self.interval
            except (HatchwayError, OSError) as exc:
                log.warning("node lease renewal failed: %s", exc)
                delay = min(RETRY, self.interval)
            await asyncio.sleep(delay)

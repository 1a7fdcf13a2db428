"""Scheduling: bind each pod without ``spec.nodeName`` to a Ready node.

A pass lists pods and nodes and binds every unbound, not-deleted pod to the feasible
node with the fewest pods (ties go round robin in name order). Feasible: Ready
(:func:`~.nodes.node_ready`), not ``spec.unschedulable``, labels matching the pod's
``spec.nodeSelector``, and no ``NoSchedule``/``NoExecute`` taint the pod does not
tolerate. Binding sets ``spec.nodeName`` and a ``PodScheduled`` condition, with the
pod's resourceVersion as precondition (a pod changed meanwhile waits for the next
pass). Passes run when :meth:`Scheduler.kick` is called (pod or node created or
changed) and every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from hatchway.api.events import WARNING
from hatchway.api.meta import format_time
from hatchway.api.status import StatusError
from hatchway.apiserver.events import EventStore
from hatchway.apiserver.nodes import node_ready
from hatchway.store.base import Store

log = logging.getLogger(__name__)


def _tolerates(pod: dict[str, Any], taint: dict[str, Any]) -> bool:
    for tol in (pod.get("spec") or {}).get("tolerations") or ():
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (
            not tol.get("key") or tol["key"] == taint.get("key")
        ):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def feasible(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    if not node_ready(node):
        return False
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    for taint in spec.get("taints") or ():
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(pod, taint):
            return False
    return True


#: How often a pod that still fits no node gets its FailedScheduling event again.
FAILED_EVERY = 60.0


def unschedulable_message(pod: dict[str, Any], nodes: list[dict[str, Any]]) -> str:
    """The scheduler's ``0/N nodes are available: ...`` with a count per reason."""
    reasons: dict[str, int] = {}
    for node in nodes:
        spec = node.get("spec") or {}
        labels = (node.get("metadata") or {}).get("labels") or {}
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        if not node_ready(node):
            why = "node(s) were not ready"
        elif spec.get("unschedulable"):
            why = "node(s) were unschedulable"
        elif any(labels.get(k) != v for k, v in selector.items()):
            why = "node(s) didn't match Pod's node affinity/selector"
        else:
            why = "node(s) had untolerated taint"
        reasons[why] = reasons.get(why, 0) + 1
    text = f"0/{len(nodes)} nodes are available"
    if reasons:
        text += ": " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) + "."
    return text


def _bind(pod: dict[str, Any], node_name: str) -> dict[str, Any]:
    pod["spec"]["nodeName"] = node_name
    st = pod.setdefault("status", {})
    conditions = [c for c in st.get("conditions") or () if c.get("type") != "PodScheduled"]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": format_time(datetime.now(UTC)),
        }
    )
    st["conditions"] = conditions
    return pod


class Scheduler:
    """Binds pods to nodes (see module docstring)."""

    def __init__(
        self, store: Store, *, interval: float = 5.0, events: EventStore | None = None
    ) -> None:
        self.store = store
        self.interval = interval
        self.events = events
        self._wake = asyncio.Event()
        self._turn = 0
        #: uid -> (message, when) of the last FailedScheduling event: one a minute at most.
        self._unschedulable: dict[str, tuple[str, float]] = {}

    def kick(self) -> None:
        """Run a pass soon."""
        self._wake.set()

    def _choose(
        self, pod: dict[str, Any], nodes: list[dict[str, Any]], load: dict[str, int]
    ) -> str | None:
        names = [n["metadata"]["name"] for n in nodes if feasible(pod, n)]
        if not names:
            return None
        fewest = min(load.get(n, 0) for n in names)
        best = [n for n in names if load.get(n, 0) == fewest]
        choice = best[self._turn % len(best)]
        self._turn += 1
        return choice

    async def schedule_once(self) -> dict[str, str]:
        """One pass: ``{"namespace/pod": node}`` for the pods bound."""
        pods, _ = await self.store.list("pods")
        nodes, _ = await self.store.list("nodes")
        load: dict[str, int] = {}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                load[node] = load.get(node, 0) + 1
        bound: dict[str, str] = {}
        for pod in pods:
            spec = pod.get("spec") or {}
            if spec.get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            choice = self._choose(pod, nodes, load)
            if choice is None:
                await self._failed(pod, nodes)
                continue
            meta = pod["metadata"]
            try:
                await self.store.update(
                    "pods", _bind(pod, choice), expect_rv=meta.get("resourceVersion")
                )
            except StatusError as exc:
                log.debug("binding %s/%s postponed: %s", meta.get("namespace"), meta["name"], exc)
                continue
            load[choice] = load.get(choice, 0) + 1
            bound[f"{meta.get('namespace')}/{meta['name']}"] = choice
            self._unschedulable.pop(str(meta.get("uid") or ""), None)
            if self.events is not None:
                text = f"Successfully assigned {meta.get('namespace')}/{meta['name']} to {choice}"
                await self.events.record(pod, "Scheduled", text)
        live = {str(p["metadata"].get("uid") or "") for p in pods}
        for uid in set(self._unschedulable) - live:
            del self._unschedulable[uid]
        return bound

    async def _failed(self, pod: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
        """A FailedScheduling event saying why no node fits (at most one a minute)."""
        if self.events is None:
            return
        text = unschedulable_message(pod, nodes)
        uid = str(pod["metadata"].get("uid") or "")
        last = self._unschedulable.get(uid)
        now = time.monotonic()
        if last is not None and last[0] == text and now - last[1] < FAILED_EVERY:
            return
        self._unschedulable[uid] = (text, now)
        await self.events.record(pod, "FailedScheduling", text, type_=WARNING)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.schedule_once()
            except (StatusError, OSError, RuntimeError):
                log.exception("scheduling pass failed")

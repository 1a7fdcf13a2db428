"""Scheduling binds pods to Ready nodes; nodes whose heartbeats stop become NotReady."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from hatchway.api.meta import format_time
from hatchway.apiserver.nodes import NOT_POSTING, NodeMonitor, node_ready, ready_condition
from hatchway.apiserver.scheduler import Scheduler, feasible
from hatchway.store.sqlite import SqliteStore

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)


def node(name: str, ready: str = "True", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"disk": "ssd" if name == "fast" else "hdd"}},
        "spec": spec,
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "lastHeartbeatTime": format_time(datetime.now(UTC)),
                }
            ]
        },
    }


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    }


async def test_binds_only_to_ready_feasible_nodes_least_loaded(tmp_path) -> None:
    store = SqliteStore(tmp_path / "db")
    try:
        for n in (
            node("down", "False"),
            node("cordoned", unschedulable=True),
            node("a"),
            node("fast"),
        ):
            await store.create("nodes", n)
        tainted = node("tainted", taints=[{"key": "gpu", "effect": "NoSchedule"}])
        await store.create("nodes", tainted)
        for i in range(4):
            await store.create("pods", pod(f"p{i}"))
        await store.create("pods", pod("picky", nodeSelector={"disk": "ssd"}))
        await store.create("pods", pod("nowhere", nodeSelector={"disk": "tape"}))
        await store.create(
            "pods",
            pod(
                "gpu",
                nodeSelector={"disk": "hdd"},
                tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            ),
        )
        bound = await Scheduler(store).schedule_once()
        assert bound["default/picky"] == "fast"
        assert "default/nowhere" not in bound
        assert bound["default/gpu"] in ("a", "tainted")
        plain = [bound[f"default/p{i}"] for i in range(4)]
        assert set(plain) <= {"a", "fast", "tainted"} and "tainted" not in plain
        counts = {n: plain.count(n) + (n == "fast") for n in ("a", "fast")}
        assert abs(counts["a"] - counts["fast"]) <= 1  # spread by load
        stored = await store.get("pods", "default", "p0")
        assert stored["spec"]["nodeName"] == plain[0]
        assert stored["status"]["conditions"][0]["type"] == "PodScheduled"
        assert await Scheduler(store).schedule_once() == {}  # nothing left that fits
        assert not feasible(pod("x"), node("down", "Unknown"))
    finally:
        await store.close()


async def test_background_loop_binds_a_new_pod_when_kicked(tmp_path) -> None:
    store = SqliteStore(tmp_path / "db")
    scheduler = Scheduler(store, interval=60)
    task = asyncio.ensure_future(scheduler.run())
    try:
        await store.create("nodes", node("a"))
        await store.create("pods", pod("late"))
        scheduler.kick()
        async with asyncio.timeout(5 * SCALE):
            while not (await store.get("pods", "default", "late"))["spec"].get("nodeName"):
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_node_becomes_not_ready_when_heartbeats_stop(tmp_path) -> None:
    store = SqliteStore(tmp_path / "db")
    monitor = NodeMonitor(store, grace=0.3 * SCALE, interval=0.05)
    try:
        await store.create("nodes", node("quiet"))
        await store.create("nodes", node("chatty"))
        assert await monitor.check_once() == []
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0 * SCALE
        marked: list[str] = []
        while loop.time() < end:
            chatty = await store.get("nodes", "", "chatty")
            cond = ready_condition(chatty)
            assert cond is not None
            cond["lastHeartbeatTime"] = format_time(datetime.now(UTC)) + str(loop.time())
            await store.update("nodes", chatty)  # a heartbeat
            marked += await monitor.check_once()
            await asyncio.sleep(0.05)
        assert marked == ["quiet"]
        quiet = await store.get("nodes", "", "quiet")
        assert not node_ready(quiet)
        cond = ready_condition(quiet)
        assert cond is not None and cond["status"] == "Unknown"
        assert cond["reason"] == "NodeStatusUnknown" and cond["message"] == NOT_POSTING
        assert node_ready(await store.get("nodes", "", "chatty"))
        # The node heartbeats again: Ready, and the monitor leaves it alone.
        quiet = await store.get("nodes", "", "quiet")
        await store.update("nodes", node("quiet") | {"metadata": quiet["metadata"]})
        assert await monitor.check_once() == []
        assert node_ready(await store.get("nodes", "", "quiet"))
    finally:
        await store.close()


async def test_a_node_lease_whose_node_is_gone_is_collected(tmp_path) -> None:
    """The garbage collector's work for node Leases (protocol.md 11.5): owned by a Node
    that no longer exists (deleted, or re-created with another uid), the Lease goes; a
    Lease without an owner yet (the agent adds it once its Node exists) stays."""
    store = SqliteStore(tmp_path / "db")
    monitor = NodeMonitor(store, grace=60, interval=60)

    def lease(name: str, owner: dict[str, Any] | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": "kube-node-lease"}
        if owner is not None:
            ref = {"apiVersion": "v1", "kind": "Node", "name": name}
            meta["ownerReferences"] = [{**ref, "uid": owner["metadata"]["uid"]}]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta}

    try:
        kept = await store.create("nodes", node("kept"))
        gone = await store.create("nodes", node("gone"))
        await store.create("leases", lease("kept", kept))
        await store.create("leases", lease("gone", gone))
        await store.create("leases", lease("new", None))
        await store.delete("nodes", "", "gone")
        await store.create("nodes", node("gone"))  # the same name, another uid
        await monitor.check_once()
        leases, _ = await store.list("leases", "kube-node-lease")
        assert [item["metadata"]["name"] for item in leases] == ["kept", "new"]
    finally:
        await store.close()

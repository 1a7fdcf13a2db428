"""Leader election over one store (client-go's semantics, protocol.md 11.2): of several
candidates exactly one leads and runs the controllers; a leader closed cleanly releases
the Lease and a successor takes over at once; a leader cut off from the store stops its
controllers after the renew deadline and another takes over after the lease duration;
and with whole API servers on one store, the scheduler and the node lifecycle run only
on the leader, before and after a change of leader."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hatchway.api import lease as lease_api
from hatchway.apiserver.leader import (
    CONTROLLER_LEASE,
    IDENTITY_LABEL,
    NAMESPACE,
    LeaderElector,
    LeaderTimings,
    identity_lease_name,
)
from hatchway.apiserver.nodes import NOT_POSTING, ready_condition
from hatchway.apiserver.server import ApiServer, ApiServerConfig
from hatchway.store.memory import MemoryStore

from .test_scheduler import node, pod

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1") or 1)
FAST = LeaderTimings(lease_duration=3.0 * SCALE, renew_deadline=2.0 * SCALE, retry_period=0.2)


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout * SCALE):
        while not check():
            await asyncio.sleep(0.02)


class CutStore:
    """The store, until ``cut``: then every call fails as an unreachable etcd would."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                raise OSError("connection refused")
            return await method(*args, **kwargs)

        return call


class Candidate:
    """One elector whose controller counts how often it runs and was cancelled."""

    def __init__(self, store: Any, name: str, timings: LeaderTimings = FAST) -> None:
        self.running = 0
        self.started = 0
        self.cancelled = 0
        self.elector = LeaderElector(store, name, [self._controller], timings)
        self.task: asyncio.Task[None] | None = None

    async def _controller(self) -> None:
        self.running += 1
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    def start(self) -> Candidate:
        self.task = asyncio.get_running_loop().create_task(self.elector.run())
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def leaders(candidates: list[Candidate]) -> list[Candidate]:
    return [c for c in candidates if c.elector.is_leader]


async def sample_one_leader(candidates: list[Candidate], periods: int = 10) -> Candidate:
    """Watch for ``periods`` retry periods: never two leaders, never a controller running
    outside the leader; the leader at the end."""
    for _ in range(periods * 5):
        await asyncio.sleep(FAST.retry_period / 5)
        assert len(leaders(candidates)) <= 1
        assert all(c.running == (1 if c.elector.is_leader else 0) for c in candidates)
    (leader,) = leaders(candidates)
    return leader


async def lease_of(store: Any) -> dict[str, Any]:
    return await store.get("leases", NAMESPACE, CONTROLLER_LEASE)


async def test_exactly_one_of_three_leads_and_runs_the_controllers() -> None:
    store = MemoryStore()
    candidates = [Candidate(store, f"c{i}").start() for i in range(3)]
    try:
        await until(lambda: bool(leaders(candidates)), "a leader")
        leader = await sample_one_leader(candidates)
        spec = (await lease_of(store))["spec"]
        assert spec["holderIdentity"] == leader.elector.identity
        assert spec["leaseDurationSeconds"] == round(FAST.lease_duration)
        assert spec["leaseTransitions"] == 0
        assert lease_api.parse_micro(spec["renewTime"]) is not None
        first_renewal = spec["renewTime"]
        await asyncio.sleep(FAST.retry_period * 3)
        assert (await lease_of(store))["spec"]["renewTime"] != first_renewal  # renewed
        assert sum(c.started for c in candidates) == 1
    finally:
        for c in candidates:
            await c.stop()


async def test_a_closed_leader_releases_and_a_successor_takes_over_at_once() -> None:
    """Lease duration 600 s: a successor within the test's timeout can only be the
    release's doing (ReleaseOnCancel)."""
    slow = LeaderTimings(lease_duration=600.0, renew_deadline=10.0, retry_period=0.2)
    store = MemoryStore()
    candidates = [Candidate(store, f"c{i}", slow).start() for i in range(3)]
    try:
        await until(lambda: bool(leaders(candidates)), "a leader")
        (old,) = leaders(candidates)
        await old.stop()
        assert (old.running, old.cancelled) == (0, 1)  # its controllers stopped first
        spec = (await lease_of(store))["spec"]
        assert lease_api.holder({"spec": spec}) == ""
        assert spec["leaseDurationSeconds"] == 1
        rest = [c for c in candidates if c is not old]
        await until(lambda: bool(leaders(rest)), "a successor", 20.0)
        (new,) = leaders(rest)
        spec = (await lease_of(store))["spec"]
        assert spec["holderIdentity"] == new.elector.identity
        assert spec["leaseTransitions"] == 1
        # Its controllers start in a task of their own once it leads: under load, a moment later.
        await until(lambda: new.running == 1, "the successor's controllers")
        assert new.running == 1
    finally:
        for c in candidates:
            await c.stop()


async def test_a_leader_cut_off_stops_and_another_takes_over_after_the_lease() -> None:
    store = MemoryStore()
    cut = CutStore(store)
    first = Candidate(cut, "first").start()
    await until(lambda: first.elector.is_leader, "the first leader")
    others = [Candidate(store, f"c{i}").start() for i in range(2)]
    candidates = [first, *others]
    try:
        await sample_one_leader(candidates, periods=3)
        cut.cut = True  # a partition: its renewals fail, its release cannot be written
        seen_two = False
        async with asyncio.timeout(30 * SCALE):
            while not leaders(others):
                seen_two |= len(leaders(candidates)) > 1
                await asyncio.sleep(0.02)
        assert not seen_two
        assert not first.elector.is_leader  # gave up at its renew deadline, before
        assert (first.running, first.cancelled) == (0, 1)
        leader = await sample_one_leader(candidates, periods=3)
        spec = (await lease_of(store))["spec"]
        assert spec["holderIdentity"] == leader.elector.identity
        assert spec["leaseTransitions"] == 1
    finally:
        for c in candidates:
            await c.stop()


async def test_two_candidates_racing_for_a_new_lease_one_wins() -> None:
    store = MemoryStore()
    a = LeaderElector(store, "a", [], FAST)
    b = LeaderElector(store, "b", [], FAST)
    won = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(won) == [False, True]
    holder = lease_api.holder(await lease_of(store))
    assert holder == ("a" if won[0] else "b")
    loser = b if won[0] else a
    assert not await loser.try_acquire_or_renew()  # held and not yet seen expiring


async def test_a_sole_elector_takes_a_dead_processs_lease_at_once() -> None:
    """On its own SQLite file no other process can hold the Lease: after a crash the
    restarted server leads at once; on a shared store it waits out the lease."""
    store = MemoryStore()
    slow = LeaderTimings(lease_duration=600.0, renew_deadline=10.0, retry_period=0.2)
    crashed = LeaderElector(store, "crashed", [], slow)
    assert await crashed.try_acquire_or_renew()
    shared = LeaderElector(store, "restarted", [], slow)
    assert not await shared.try_acquire_or_renew()
    sole = LeaderElector(store, "restarted", [], slow, sole=True)
    assert await sole.try_acquire_or_renew()
    spec = (await lease_of(store))["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("restarted", 1)


async def test_a_restarted_api_server_on_sqlite_leads_at_once(tmp_path: Path) -> None:
    config = ApiServerConfig(data_dir=tmp_path / "data", port=0, leader_timings=LeaderTimings(
        lease_duration=600.0, renew_deadline=10.0, retry_period=0.2))  # fmt: skip
    async with ApiServer(config) as first:
        await _leader([first])
        assert first.elector is not None
        first.elector.release = _no_release  # type: ignore[method-assign]  # as if killed
    async with ApiServer(config) as second:
        assert await _leader([second]) is second


async def _no_release() -> bool:
    return False


def test_timings_must_be_ordered_as_client_go_requires() -> None:
    with pytest.raises(ValueError):
        LeaderTimings(lease_duration=10.0, renew_deadline=10.0, retry_period=2.0)
    with pytest.raises(ValueError):
        LeaderTimings(lease_duration=15.0, renew_deadline=10.0, retry_period=0.0)


# -- whole API servers on one store -------------------------------------------------------


def _config(data_dir: Path) -> ApiServerConfig:
    return ApiServerConfig(
        data_dir=data_dir,
        port=0,
        leader_timings=FAST,
        scheduler_interval=0.2,
        node_monitor_grace=1.0,
        node_monitor_interval=0.2,
    )


async def _leader(servers: list[ApiServer]) -> ApiServer:
    async with asyncio.timeout(30 * SCALE):
        while True:
            leading = [s for s in servers if s.elector is not None and s.elector.is_leader]
            if leading:
                assert len(leading) == 1
                return leading[0]
            await asyncio.sleep(0.02)


async def _bound(store: MemoryStore, name: str) -> str:
    async with asyncio.timeout(30 * SCALE):
        while True:
            got = await store.get("pods", "default", name)
            if got["spec"].get("nodeName"):
                return str(got["spec"]["nodeName"])
            await asyncio.sleep(0.05)


async def test_controllers_run_only_on_the_leading_api_server(tmp_path: Path) -> None:
    store = MemoryStore()
    servers = [ApiServer(_config(tmp_path / "data"), store=store) for _ in range(3)]
    try:
        for server in servers:
            await server.start()
        leader = await _leader(servers)
        await store.create("nodes", node("n1"))
        await store.create("pods", pod("before"))
        assert await _bound(store, "before") == "n1"
        for server in servers:  # only the leader's scheduler and node monitor ran
            assert server.node_monitor is not None
            assert bool(server.node_monitor._seen) == (server is leader)

        await leader.close()
        rest = [s for s in servers if s is not leader]
        second = await _leader(rest)
        await store.create("pods", pod("after"))  # created after the change of leader
        assert await _bound(store, "after") == "n1"
        lease = await store.get("leases", NAMESPACE, CONTROLLER_LEASE)
        assert lease["spec"]["holderIdentity"] == second.elector.identity  # type: ignore[union-attr]
        assert lease["spec"]["leaseTransitions"] == 1

        # n1 posts no heartbeats: the leader's node lifecycle marks it, once.
        since = (await store.get("nodes", "", "n1"))["metadata"]["resourceVersion"]
        async with store.watch("nodes", since_rv=since) as watch, asyncio.timeout(30 * SCALE):
            async for event in watch:
                marked = ready_condition(event.object)
                if marked is not None and marked["status"] == "Unknown":
                    break
        assert marked["message"] == NOT_POSTING
        await asyncio.sleep(1.0)  # time for another monitor to have marked it again
        found = await store.get("nodes", "", "n1")
        assert found["metadata"]["resourceVersion"] == event.object["metadata"]["resourceVersion"]
        for server in rest:
            assert server.node_monitor is not None
            assert bool(server.node_monitor._seen) == (server is second)
    finally:
        for server in servers:
            await server.close()


async def test_each_api_server_keeps_an_identity_lease(tmp_path: Path) -> None:
    store = MemoryStore()
    servers = [ApiServer(_config(tmp_path / "data"), store=store) for _ in range(2)]
    try:
        for server in servers:
            await server.start()
        items, _ = await store.list("leases", NAMESPACE)
        identities = {
            i["metadata"]["name"]: i
            for i in items
            if (i["metadata"].get("labels") or {}).get(IDENTITY_LABEL) == "kube-apiserver"
        }
        for server in servers:
            assert server.elector is not None
            name = identity_lease_name(server.elector.identity)
            assert name.startswith("apiserver-") and name in identities
            assert identities[name]["spec"]["holderIdentity"] == server.elector.identity
            assert identities[name]["spec"]["leaseDurationSeconds"] == 60
        assert servers[0].elector is not None
        closed = identity_lease_name(servers[0].elector.identity)
        await servers[0].close()
        items, _ = await store.list("leases", NAMESPACE)
        names = {i["metadata"]["name"] for i in items}
        assert closed not in names  # a clean close removes its own
        assert len(names & set(identities)) == 1
    finally:
        for server in servers:
            await server.close()

"""The Store contract, run against every implementation (test_memory.py, test_sqlite.py,
test_etcd.py).

A module importing this defines a ``make_store`` fixture: ``make_store(**kwargs)``
returns a fresh store (same backing file for a given test, where there is one).
resourceVersions are counted from the store's ``current_rv()`` at the start of a test:
a fresh memory or SQLite store starts at 0, an etcd cluster at whatever revision it has.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from hatchway.api.status import StatusError
from hatchway.store.base import ADDED, DELETED, MODIFIED

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


def pod(name: str, namespace: str = "default", **labels: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


async def next_event(watch):
    return await asyncio.wait_for(watch.__anext__(), 5 * SCALE)


class StoreContract:
    async def test_create_get_roundtrip(self, make_store):
        store = make_store()
        base = int(await store.current_rv())
        created = await store.create("pods", pod("a"))
        assert created["metadata"]["resourceVersion"] == str(base + 1)
        assert created["metadata"]["uid"]
        assert created["metadata"]["creationTimestamp"].endswith("Z")
        got = await store.get("pods", "default", "a")
        assert got == created
        got["spec"] = "mutated"  # a copy: the store is not affected
        assert (await store.get("pods", "default", "a")) == created

    async def test_create_keeps_given_uid_and_timestamp(self, make_store):
        store = make_store()
        obj = pod("a")
        obj["metadata"].update(uid="u-1", creationTimestamp="2020-01-01T00:00:00Z")
        created = await store.create("pods", obj)
        assert created["metadata"]["uid"] == "u-1"
        assert created["metadata"]["creationTimestamp"] == "2020-01-01T00:00:00Z"
        assert "resourceVersion" not in obj["metadata"]  # the input is not modified

    async def test_generate_name(self, make_store):
        store = make_store()
        obj = pod("")
        obj["metadata"]["generateName"] = "web-"
        created = await store.create("pods", obj)
        name = created["metadata"]["name"]
        assert name.startswith("web-") and len(name) == 9

    async def test_missing_name_is_invalid(self, make_store):
        store = make_store()
        with pytest.raises(StatusError) as info:
            await store.create("pods", pod(""))
        assert info.value.code == 422

    async def test_already_exists(self, make_store):
        store = make_store()
        await store.create("pods", pod("a"))
        with pytest.raises(StatusError) as info:
            await store.create("pods", pod("a"))
        assert info.value.status == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'pods "a" already exists',
            "reason": "AlreadyExists",
            "details": {"name": "a", "kind": "pods"},
            "code": 409,
        }
        # same name in another namespace is another object
        await store.create("pods", pod("a", "other"))

    async def test_not_found(self, make_store):
        store = make_store()
        with pytest.raises(StatusError) as info:
            await store.get("pods", "default", "nope")
        assert info.value.code == 404
        assert info.value.message == 'pods "nope" not found'
        with pytest.raises(StatusError) as info:
            await store.get("roles", "default", "r")
        assert info.value.message == 'roles.rbac.authorization.k8s.io "r" not found'
        with pytest.raises(StatusError):
            await store.delete("pods", "default", "nope")
        with pytest.raises(StatusError) as info:
            await store.update("pods", pod("nope"))
        assert info.value.code == 404

    async def test_cluster_scoped_ignores_namespace(self, make_store):
        store = make_store()
        await store.create("nodes", node("n1"))
        assert (await store.get("nodes", "", "n1"))["metadata"]["name"] == "n1"
        assert (await store.get("nodes", "whatever", "n1"))["metadata"]["name"] == "n1"

    async def test_list_sorted_with_rv(self, make_store):
        store = make_store()
        base = int(await store.current_rv())
        await store.create("pods", pod("b", "ns2"))
        await store.create("pods", pod("b"))
        await store.create("pods", pod("a"))
        await store.create("nodes", node("n"))
        items, rv = await store.list("pods")
        assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [
            ("default", "a"),
            ("default", "b"),
            ("ns2", "b"),
        ]
        assert rv == str(base + 4)
        items, _ = await store.list("pods", "ns2")
        assert [i["metadata"]["name"] for i in items] == ["b"]
        assert await store.list("roles") == ([], str(base + 4))

    async def test_rv_is_global_and_monotonic(self, make_store):
        store = make_store()
        rvs = []
        for i in range(5):
            rvs.append(
                int((await store.create("pods", pod(f"p{i}")))["metadata"]["resourceVersion"])
            )
            rvs.append(
                int((await store.create("nodes", node(f"n{i}")))["metadata"]["resourceVersion"])
            )
        assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)
        assert await store.current_rv() == str(rvs[-1])

    async def test_update_and_conflict(self, make_store):
        store = make_store()
        created = await store.create("pods", pod("a"))
        changed = dict(created, spec={"containers": [{"name": "main", "image": "v2"}]})
        updated = await store.update("pods", changed)
        assert int(updated["metadata"]["resourceVersion"]) > int(
            created["metadata"]["resourceVersion"]
        )
        assert updated["metadata"]["uid"] == created["metadata"]["uid"]
        with pytest.raises(StatusError) as info:
            await store.update("pods", changed)  # carries the old resourceVersion
        assert info.value.code == 409
        assert info.value.reason == "Conflict"
        assert info.value.message == (
            'Operation cannot be fulfilled on pods "a": the object has been modified; '
            "please apply your changes to the latest version and try again"
        )
        with pytest.raises(StatusError):
            await store.update("pods", updated, expect_rv=created["metadata"]["resourceVersion"])
        unconditional = dict(updated, metadata={**updated["metadata"]}, status={"phase": "X"})
        del unconditional["metadata"]["resourceVersion"]
        result = await store.update("pods", unconditional)
        assert result["status"] == {"phase": "X"}

    async def test_update_keeps_uid_and_creation(self, make_store):
        store = make_store()
        created = await store.create("pods", pod("a"))
        body = {**created, "metadata": {**created["metadata"], "uid": "evil"}}
        body["metadata"].pop("creationTimestamp")
        body["status"] = {"phase": "Running"}
        updated = await store.update("pods", body)
        assert updated["metadata"]["uid"] == created["metadata"]["uid"]
        assert updated["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]

    async def test_noop_update_keeps_rv(self, make_store):
        store = make_store()
        created = await store.create("pods", pod("a"))
        again = await store.update("pods", created)
        assert again == created
        assert await store.current_rv() == created["metadata"]["resourceVersion"]

    async def test_delete(self, make_store):
        store = make_store()
        created = await store.create("pods", pod("a"))
        rv = int(created["metadata"]["resourceVersion"])
        with pytest.raises(StatusError) as info:
            await store.delete("pods", "default", "a", expect_rv=str(rv + 998))
        assert info.value.code == 409
        deleted = await store.delete("pods", "default", "a", expect_rv=str(rv))
        assert deleted["metadata"]["uid"] == created["metadata"]["uid"]
        assert deleted["metadata"]["resourceVersion"] == str(rv + 1)
        with pytest.raises(StatusError) as info:
            await store.get("pods", "default", "a")
        assert info.value.code == 404
        await store.create("pods", pod("a"))  # the name is free again

    async def test_watch_live(self, make_store):
        store = make_store()
        base = int(await store.current_rv())
        await store.create("nodes", node("first"))
        async with store.watch("pods", "default", since_rv=await store.current_rv()) as w:
            await store.create("pods", pod("a"))
            await store.create("pods", pod("x", "other"))  # filtered out
            await store.create("nodes", node("n"))  # another resource
            obj = await store.get("pods", "default", "a")
            obj["status"] = {"phase": "Running"}
            await store.update("pods", obj)
            await store.delete("pods", "default", "a")
            events = [await next_event(w) for _ in range(3)]
        assert [e.type for e in events] == [ADDED, MODIFIED, DELETED]
        assert [e.resource_version - base for e in events] == [2, 5, 6]
        assert events[1].object["status"] == {"phase": "Running"}
        assert events[2].to_json()["type"] == "DELETED"

    async def test_watch_replays_from_rv(self, make_store):
        store = make_store()
        base = int(await store.current_rv())
        await store.create("pods", pod("a"))
        await store.create("pods", pod("b"))
        await store.delete("pods", "default", "a")
        w = store.watch("pods", since_rv=str(base + 1))
        first, second = await next_event(w), await next_event(w)
        assert (first.type, first.object["metadata"]["name"]) == (ADDED, "b")
        assert (second.type, second.object["metadata"]["name"]) == (DELETED, "a")
        await store.create("pods", pod("c"))
        third = await next_event(w)
        assert (third.type, third.resource_version - base) == (ADDED, 4)
        await w.close()
        with pytest.raises(StopAsyncIteration):
            await w.__anext__()

    async def test_watch_without_rv_lists_first(self, make_store):
        store = make_store()
        await store.create("pods", pod("a"))
        await store.create("pods", pod("b"))
        expected = ["a", "b"]
        for since in (None, "0"):
            w = store.watch("pods", since_rv=since)
            names = [(await next_event(w)).object["metadata"]["name"] for _ in expected]
            assert names == expected
            expected.append(f"c{since}")
            await store.create("pods", pod(f"c{since}"))
            event = await next_event(w)
            assert event.type == ADDED and event.object["metadata"]["name"] == f"c{since}"
            await w.close()

    async def test_watch_too_old_is_410(self, make_store):
        store = make_store(history=3)
        base = int(await store.current_rv())
        for i in range(10):
            await store.create("pods", pod(f"p{i}"))
        w = store.watch("pods", since_rv=str(base + 2))
        with pytest.raises(StatusError) as info:
            await next_event(w)
        assert info.value.code == 410
        assert info.value.reason == "Expired"
        assert info.value.message.startswith(f"too old resource version: {base + 2} (")
        w = store.watch("pods", since_rv=str(base + 7))  # still inside the window
        assert (await next_event(w)).resource_version == base + 8
        await w.close()

    async def test_watch_bad_rv_is_400(self, make_store):
        store = make_store()
        with pytest.raises(StatusError) as info:
            await next_event(store.watch("pods", since_rv="abc"))
        assert info.value.code == 400

    async def test_slow_watcher_is_dropped(self, make_store):
        store = make_store(watch_queue=5)
        w = store.watch("pods", since_rv="0")
        await store.create("pods", pod("first"))
        assert (await next_event(w)).object["metadata"]["name"] == "first"
        for i in range(20):
            await store.create("pods", pod(f"p{i}"))
        with pytest.raises(StatusError) as info:
            for _ in range(30):
                await next_event(w)
        assert info.value.code == 410
        assert "fell more than 5 events behind" in info.value.message

    async def test_close_ends_watches(self, make_store):
        store = make_store()
        w = store.watch("pods", since_rv="0")
        waiter = asyncio.ensure_future(next_event(w))
        await asyncio.sleep(0.05)
        await store.close()
        with pytest.raises(StopAsyncIteration):
            await waiter

    async def test_concurrent_writers(self, make_store):
        store = make_store()
        base = int(await store.current_rv())
        await store.create("nodes", node("n"))
        seen = store.watch("pods", since_rv=str(base + 1))

        async def writer(k: int) -> None:
            for i in range(10):
                created = await store.create("pods", pod(f"w{k}-{i}"))
                created["status"] = {"phase": "Running"}
                await store.update("pods", created)

        await asyncio.gather(*(writer(k) for k in range(5)))
        items, rv = await store.list("pods")
        assert len(items) == 50 and rv == str(base + 101)
        rvs = [(await next_event(seen)).resource_version - base for _ in range(100)]
        assert rvs == list(range(2, 102))
        await seen.close()

    async def test_concurrent_conflicting_updates(self, make_store):
        store = make_store()
        base = await store.create("pods", pod("a"))

        async def bump(i: int):
            body = {**base, "status": {"phase": f"P{i}"}}
            try:
                return await store.update("pods", body)
            except StatusError as exc:
                return exc.code

        results = await asyncio.gather(*(bump(i) for i in range(6)))
        assert sum(1 for r in results if isinstance(r, dict)) == 1
        assert sorted(r for r in results if isinstance(r, int)) == [409] * 5
